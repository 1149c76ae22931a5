"""The Kafka landing's durable day files: written under ``<root>/.incoming``, fsynced, renamed into
their day folder (the ``dt=`` layout of ``landing_zone.py``), named by the offsets they hold, so
that writing the same offsets again gives the same file; and the files of an earlier, uncommitted
attempt that a wider range of offsets replaces.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import date, datetime
from pathlib import Path

from customer_assets.sources.landing_zone import FOLDER_PREFIX, day_folder

INCOMING = (
    ".incoming"  # not a dt= folder: the week's reader and the landing-zone sensor never see it
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_pattern(topic: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(topic)}\+(\d+)\+(\d+)-(\d+)\.jsonl$")


class DayFile:
    """One day's events of one partition, written to ``.incoming`` until ``publish``."""

    def __init__(self, root: Path, day: str):
        self.day = day
        self.temp = root / INCOMING / f"{uuid.uuid4().hex}.jsonl"
        self.handle = self.temp.open("wb")
        self.first: int | None = None
        self.last: int | None = None
        self.lines = 0

    def write(self, offset: int, line: bytes) -> None:
        self.first = offset if self.first is None else self.first
        self.last = offset
        self.handle.write(line + b"\n")
        self.lines += 1

    def publish(self, root: Path, topic: str, partition: int) -> Path:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        folder = day_folder(root, date.fromisoformat(self.day))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{topic}+{partition}+{self.first:010d}-{self.last:010d}.jsonl"
        os.replace(self.temp, final)
        return final

    def discard(self) -> None:
        self.handle.close()
        self.temp.unlink(missing_ok=True)


def publish_day_files(root: Path, topic: str, files: dict[tuple[str, int], DayFile]) -> list[Path]:
    """Every day file renamed into its day folder, then the folders and the root fsynced: once this
    returns, the files survive a crash, and the offsets they hold may be committed."""
    published = [
        day_file.publish(root, topic, partition)
        for (_, partition), day_file in sorted(files.items())
    ]
    folders = {final.parent for final in published}
    for folder in sorted(folders):
        _fsync_dir(folder)
    if folders:
        _fsync_dir(root)
    return published


def replaced_files(
    root: Path, topic: str, ranges: dict[int, tuple[int, int]], keep: set[Path]
) -> list[Path]:
    """Files of earlier, uncommitted attempts: same topic and partition, offsets within what this
    run read."""
    pattern = file_pattern(topic)
    found = []
    for path in root.glob(f"{FOLDER_PREFIX}*/{topic}+*"):
        match = pattern.match(path.name)
        if not match or path in keep:
            continue
        partition, first, last = (int(g) for g in match.groups())
        if partition in ranges and ranges[partition][0] <= first and last <= ranges[partition][1]:
            found.append(path)
    return found


def remove_replaced_files(
    root: Path, topic: str, ranges: dict[int, tuple[int, int]], keep: set[Path]
) -> list[Path]:
    """The files this run's wider ranges replace, removed (and their folders fsynced)."""
    replaced = replaced_files(root, topic, ranges, keep)
    for path in replaced:
        path.unlink(missing_ok=True)
    for folder in {p.parent for p in replaced}:
        _fsync_dir(folder)
    return replaced


def sweep_incoming(root: Path, older_than_seconds: float = 86_400) -> None:
    """Temporary files of a run that died before publishing them (none younger than a day: a run may
    be writing them)."""
    now = time.time()
    for path in (root / INCOMING).glob("*.jsonl"):
        try:
            if now - path.stat().st_mtime > older_than_seconds:
                path.unlink()
        except FileNotFoundError:
            pass


def week_event_lines(root: Path, topic: str, start: datetime, end: datetime) -> int:
    """Lines the topic's files hold in the week's day folders (what the week has from Kafka, any
    run)."""
    pattern = file_pattern(topic)
    total = 0
    day = start.date()
    while day < end.date() or (day == end.date() and end.time() != datetime.min.time()):
        folder = day_folder(root, day)
        if folder.is_dir():
            for path in folder.iterdir():
                if pattern.match(path.name):
                    with path.open("rb") as handle:
                        total += sum(
                            chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")
                        )
        day = date.fromordinal(day.toordinal() + 1)
    return total
