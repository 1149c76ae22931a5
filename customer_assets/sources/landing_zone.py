"""The events landing zone: its ``dt=`` layout and how its files are opened. Anyone who needs a
day's folder, the day of a folder, or which files hold events asks this module.

Layout (what a Kafka sink connector writes):
``<EVENTS_PATH>/dt=YYYY-MM-DD/<topic>+<partition>+<offset>.jsonl``, or ``.json``, either optionally
gzip-compressed (``.jsonl.gz``). Other files are listed as skipped, not read.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

FOLDER_PREFIX = "dt="
EVENT_SUFFIXES = (".json", ".jsonl")
# The names the landing-zone sensor watches: an events file, plain or gzip-compressed.
WATCHED_ENDINGS = tuple(suffix + gz for suffix in EVENT_SUFFIXES for gz in ("", ".gz"))
# By name and by magic bytes (a connector may compress without renaming); only gzip is read
# (stdlib).
COMPRESSION_SUFFIXES = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bzip2",
    ".xz": "xz",
    ".lz4": "lz4",
    ".snappy": "snappy",
    ".sz": "snappy",
    ".zip": "zip",
    ".deflate": "deflate",
    ".lzo": "lzo",
    ".br": "brotli",
}
_MAGIC = re.compile(
    rb"(?P<gzip>\x1f\x8b)|(?P<zstd>\x28\xb5\x2f\xfd)|(?P<bzip2>BZh[1-9])|(?P<xz>\xfd7zXZ\x00)"
    rb"|(?P<lz4>\x04\x22\x4d\x18)|(?P<snappy>\xff\x06\x00\x00sNaPpY)|(?P<zip>PK\x03\x04)"
)


def day_folder(root: Path, day: date) -> Path:
    """The folder of one day's files (it may not exist)."""
    return root / f"{FOLDER_PREFIX}{day.isoformat()}"


def folder_day(folder: Path) -> date | None:
    """The day a folder holds the files of, or None when its name is not ``dt=YYYY-MM-DD``."""
    try:
        return datetime.strptime(folder.name, f"{FOLDER_PREFIX}%Y-%m-%d").date()
    except ValueError:
        return None


def day_folders(root: Path, start: datetime, end: datetime) -> list[Path]:
    """Folders that may hold the week's events: its days, plus one either side for late or early
    files."""
    days = pd.date_range((start - timedelta(days=1)).date(), end.date(), freq="D")
    return [day_folder(root, d.date()) for d in days if day_folder(root, d.date()).is_dir()]


def week_files(root: Path, start: datetime, end: datetime) -> list[Path]:
    """The files of the week's day folders (and one either side), in folder and name order."""
    return [
        path
        for folder in day_folders(root, start, end)
        for path in sorted(folder.iterdir())
        if path.is_file()
    ]


def watched_files(root: Path) -> Iterator[Path]:
    """Every events file of every day folder, by name: what the landing-zone sensor watches."""
    for path in root.glob(f"{FOLDER_PREFIX}*/*"):
        if path.is_file() and path.name.endswith(WATCHED_ENDINGS):
            yield path


class SkippedFile(Exception):
    """A file of the landing zone that is not read, with the reason (for the scan and the log)."""


def _compression(path: Path) -> str | None:
    """The compression a file's name announces; ``SkippedFile`` when it is not an events file."""
    by_name = COMPRESSION_SUFFIXES.get(path.suffix.lower())
    inner = Path(path.stem).suffix if by_name else path.suffix
    if inner.lower() not in EVENT_SUFFIXES:
        raise SkippedFile(
            "not an events file: only .json and .jsonl files, optionally gzip-compressed "
            "(.jsonl.gz), are read"
        )
    return by_name


def load_event_file(path: Path) -> bytes:
    """A file's JSON lines, decompressed when gzip (by name or by its first bytes); ``SkippedFile``
    for another compression or a broken gzip stream, so that binary data is never read as thousands
    of malformed lines."""
    by_name = _compression(path)
    with path.open("rb") as file:
        magic = _MAGIC.match(file.read(16))
        file.seek(0)
        raw = file.read()
    compression = magic.lastgroup if magic else None
    if not raw:
        return raw
    if compression is None and by_name is not None:
        if by_name == "gzip":
            raise SkippedFile(
                "named .gz but not gzip data: recompress it with gzip or rename it to .jsonl"
            )
        compression = by_name
    if compression is None:
        return raw
    if compression != "gzip":
        raise SkippedFile(
            f"compressed with {compression}: not supported, decompress it or write .jsonl/.jsonl.gz"
        )
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SkippedFile(
            f"gzip data is truncated or corrupt ({exc}): copy it again, or move it away while a "
            "writer still writes it"
        ) from None
