"""Behavioural events from a landing zone of newline-delimited JSON files, one folder per day.

Layout (what a Kafka sink connector writes): ``<EVENTS_PATH>/dt=YYYY-MM-DD/<topic>+<partition>+<offset>.jsonl``,
or ``.json``, either optionally gzip-compressed (``.jsonl.gz``). Other files are listed as skipped, not read.
A line is ``{"event_id", "event_type", "customer_id", "timestamp", "properties": {...}}``; ``feature_used``
carries ``properties.feature``, ``purchase_completed`` carries ``properties.amount_usd``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson


log = logging.getLogger(__name__)

EVENT_TYPES = ("page_view", "feature_used", "purchase_completed", "support_chat_started")
DEFAULT_ALIASES = {"pageview": "page_view", "page_viewed": "page_view", "feature_use": "feature_used",
                   "order_completed": "purchase_completed", "purchase": "purchase_completed",
                   "chat_started": "support_chat_started", "support_chat": "support_chat_started"}


MAX_WARNINGS = 10  # malformed lines (and skipped files) logged one by one per read; the rest are counted
MAX_EXAMPLES = 100  # malformed lines kept with file, line and error; a binary file would otherwise keep thousands
# What is kept of a malformed line is where it is and what kind of error it holds (file, line, field, kind),
# never its text: the examples reach the run's event log, which erasure does not reach.


@dataclass
class EventScan:
    """What reading a week of the landing zone found.

    ``malformed_lines`` counts every malformed line; ``malformed`` keeps only the first ``MAX_EXAMPLES`` of them.
    """

    files: int = 0
    lines: int = 0
    malformed: list[dict] = field(default_factory=list)
    malformed_lines: int = 0
    skipped_files: list[dict] = field(default_factory=list)
    outside_week: int = 0
    unknown_types: dict[str, int] = field(default_factory=dict)
    aliased: int = 0
    repeated_events: int = 0  # redeliveries dropped: same event_id and content as in an earlier file

    def summary(self) -> dict:
        return {"files": self.files, "lines": self.lines, "malformed_lines": self.malformed_lines,
                "malformed_examples": self.malformed[:20], "skipped_files": self.skipped_files,
                "outside_week": self.outside_week, "unknown_types": self.unknown_types, "aliased": self.aliased,
                "repeated_events": self.repeated_events}


class MalformedEventsError(Exception):
    """Too large a share of the week's lines is malformed: the week's aggregates would be wrong, not just thin."""

    def __init__(self, message: str, scan: EventScan | None = None):
        super().__init__(message)
        self.scan = scan


def day_folders(root: Path, start: datetime, end: datetime) -> list[Path]:
    """Folders that may hold the week's events: its days, plus one either side for late or early files."""
    days = pd.date_range((start - timedelta(days=1)).date(), end.date(), freq="D")
    return [root / f"dt={d.date().isoformat()}" for d in days if (root / f"dt={d.date().isoformat()}").is_dir()]


RAW_SCHEMA = pa.schema([
    # event_id: a redelivered event (a sink connector's retry, a Kafka landing redone) is counted once
    ("event_id", pa.string()), ("event_type", pa.string()), ("customer_id", pa.string()),
    # ISO 8601 with or without an offset, converted to UTC by the parser; a value that is not is a bad line.
    ("timestamp", pa.timestamp("us", tz="UTC")),
    ("properties", pa.struct([("feature", pa.string()), ("amount_usd", pa.float64())])),
])
_PARSE = pajson.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")
_READ = pajson.ReadOptions(use_threads=False, block_size=4 << 20)  # one chunk, one block: threads are ours


def _malformed(scan: EventScan, path: Path, line: int, error: str, field: str | None = None) -> None:
    """Count a malformed line and keep the first ones as location and error kind; ``read_week`` logs them (a
    capped number). ``error`` is one of the fixed kinds below, never text of the line."""
    scan.malformed_lines += 1
    if len(scan.malformed) < MAX_EXAMPLES:
        scan.malformed.append({"file": str(path), "line": line, "field": field, "error": error})


# The error kind of a field that pyarrow cannot read as its type.
_KINDS = {pa.types.is_timestamp: "not an ISO 8601 time", pa.types.is_string: "not text",
          pa.types.is_floating: "not a number", pa.types.is_struct: "not an object"}


def _kind(kind: pa.DataType) -> str:
    return next(text for test, text in _KINDS.items() if test(kind))


def _unreadable_field(value: dict, fields, prefix: str = "") -> tuple[str | None, str]:
    """Which field of a JSON object pyarrow cannot read as ``RAW_SCHEMA`` types it, and the kind of error:
    each field parsed alone (only for lines that already failed), so the error names no value."""
    for item in fields:
        part = json.dumps({item.name: value.get(item.name)}).encode()
        try:
            pajson.read_json(pa.BufferReader(part), read_options=_READ, parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([item]), unexpected_field_behavior="ignore"))
        except pa.ArrowInvalid:
            inner = value.get(item.name)
            if pa.types.is_struct(item.type) and isinstance(inner, dict):
                return _unreadable_field(inner, list(item.type), f"{prefix}{item.name}.")
            return f"{prefix}{item.name}", _kind(item.type)
    return None, "not an event the reader can type"


def _read_json(data: bytes | memoryview) -> pa.Table:
    """Parse JSON lines into ``RAW_SCHEMA``; text that is not valid UTF-8 raises ``ArrowInvalid`` like a syntax
    error (pyarrow's reader lets it through, and later string functions would fail on the whole week)."""
    table = pajson.read_json(pa.BufferReader(pa.py_buffer(data)), read_options=_READ, parse_options=_PARSE)
    table.validate(full=True)
    return table


def _parse(lines: list[bytes], numbers: Sequence[int], path: Path, scan: EventScan
           ) -> list[tuple[pa.Table, Sequence[int]]]:
    """Parse lines with pyarrow; lines that fail are halved until the bad ones stand alone (and are skipped)."""
    try:
        return [(_read_json(b"\n".join(lines)), numbers)]
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            field, kind = _unreadable_field(json.loads(lines[0]), RAW_SCHEMA)
            _malformed(scan, path, numbers[0], kind, field)
            return []
        mid = len(lines) // 2
        return _parse(lines[:mid], numbers[:mid], path, scan) + _parse(lines[mid:], numbers[mid:], path, scan)


CHUNK_BYTES = 2 << 20  # what a worker parses in one call: few calls, so little per-call work
SMALL_CHUNK_BYTES = 64 << 10  # a chunk that fails is halved down to this, then read line by line


_BLANK_OR_INDENTED = re.compile(rb"\n[\n \t\r]")  # one scan; starts with a literal, so a fast one


def _clean_lines(data: bytes, start: int, end: int) -> bool:
    """True when no line of ``data[start:end]`` is blank or starts with whitespace, so that row ``i`` of a parse
    is line ``i + 1``, and the text starts with an object (pyarrow 26 crashes on text that starts with a
    ``null`` line, apache/arrow#47409). Conservative: a line that merely starts with a space takes the
    line-level path, which reads it the same way."""
    return data[start:start + 1] == b"{" and not _BLANK_OR_INDENTED.search(data, start, end)


def _missing(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    """Per required field, where it is missing (or a blank id)."""
    blank_id = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table["customer_id"]), ""), True)
    return {"event_type": pc.is_null(table["event_type"]), "customer_id": blank_id,
            "timestamp": pc.is_null(table["timestamp"])}


def _incomplete(table: pa.Table) -> pa.ChunkedArray:
    missing = list(_missing(table).values())
    return pc.or_(pc.or_(missing[0], missing[1]), missing[2])


def _chunks(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, number of the first line)`` of ~``CHUNK_BYTES`` pieces cut at line ends (no per-line Python
    work)."""
    chunks, pos, line = [], 0, 1
    while pos < len(data):
        cut = data.find(b"\n", pos + CHUNK_BYTES)
        end = len(data) if cut == -1 else cut + 1
        chunks.append((pos, end, line))
        line += data.count(b"\n", pos, end)
        pos = end
    return chunks


def _utf8(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` is UTF-8 throughout. pyarrow checks only the fields it reads, and the line-level
    path (``json.loads``) every byte of a line: without this, a bad byte in an unread field (``event_id``) would
    make a line malformed or not depending on where the chunks fall."""
    piece = data[start:end]
    if piece.isascii():  # a few microseconds a megabyte
        return True
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_chunk(data: bytes, start: int, end: int, first_line: int) -> tuple[pa.Table, Sequence[int]] | None:
    """A clean chunk parsed in one call; None when it needs the line-level path."""
    if not _clean_lines(data, start, end) or not _utf8(data, start, end):
        return None
    try:
        table = _read_json(memoryview(data)[start:end])
    except pa.ArrowInvalid:
        return None
    lines = data.count(b"\n", start, end) + (data[end - 1:end] != b"\n")
    return (table, range(first_line, first_line + lines)) if table.num_rows == lines else None


def _parse_lines(chunk: bytes, first_line: int, path: Path, scan: EventScan) -> list[tuple[pa.Table, Sequence[int]]]:
    """The slow path for a chunk with bad or blank lines: blank lines dropped, bad lines isolated and skipped.

    Lines that are not a JSON object (``null`` tombstones, broken or non-UTF-8 text) are found by ``json.loads``
    (a chunk is a few thousand lines); what is an object but not an event pyarrow can type (a timestamp that is
    not one, say) is isolated by halving. Lines end at ``\n`` only, as in ``_chunks``.
    """
    lines, numbers = [], []
    pieces = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        pieces.pop()
    for number, line in enumerate(pieces, first_line):
        if not line.strip():
            continue
        scan.lines += 1
        try:
            value = json.loads(line)
        except UnicodeDecodeError:
            _malformed(scan, path, number, "not UTF-8")
            continue
        except json.JSONDecodeError as exc:
            _malformed(scan, path, number, f"invalid JSON at column {exc.colno}")
            continue
        if not isinstance(value, dict):
            _malformed(scan, path, number, "not a JSON object")
            continue
        if value.get("event_id") is not None and not isinstance(value["event_id"], str):
            # A numeric id is still an id (as text); another value is none. The line stays an event.
            scalar = isinstance(value["event_id"], (int, float)) and not isinstance(value["event_id"], bool)
            value["event_id"] = str(value["event_id"]) if scalar else None
            line = json.dumps(value).encode()
        lines.append(line)
        numbers.append(number)
    return _parse(lines, numbers, path, scan) if lines else []


@dataclass(frozen=True)
class _Week:
    """What a worker thread needs to reduce a chunk to the week's events."""

    start: pa.Scalar
    end: pa.Scalar
    alias_from: pa.Array
    alias_to: pa.Array

    @classmethod
    def of(cls, start: datetime, end: datetime, aliases: dict[str, str]) -> "_Week":
        utc = pa.timestamp("us", tz="UTC")
        return cls(pa.scalar(start, utc), pa.scalar(end, utc), pa.array(list(aliases), pa.string()),
                   pa.array(list(aliases.values()), pa.string()))


@dataclass
class _Piece:
    """A chunk's events of the week and what was set aside on the way."""

    lines: int
    events: pa.Table
    incomplete_lines: list[tuple[int, str]]  # line, the first required field missing
    outside_week: int
    aliased: int
    unknown_types: dict[str, int]


# event_type as codes into EVENT_TYPES: 1 byte an event instead of ~15 (14M events in a 3M-row week)
EVENT_TYPE = pa.dictionary(pa.int8(), pa.string())
EVENTS_SCHEMA = pa.schema([("customer_id", pa.string()), ("event_type", EVENT_TYPE),
                           ("timestamp", pa.timestamp("ns", tz="UTC")), ("feature", pa.string()),
                           ("amount_usd", pa.float64())])
_KNOWN = pa.array(EVENT_TYPES)
_WITH_IDS = EVENTS_SCHEMA.append(pa.field("event_id", pa.string()))  # until repeated ids are dropped


def _tidy(table: pa.Table, numbers: Sequence[int], week: _Week) -> _Piece:
    """Incomplete rows set aside (with their lines), the week kept, aliases applied, unknown types counted."""
    lines = table.num_rows
    incomplete = _incomplete(table)
    bad = []
    if pc.any(incomplete).as_py():
        missing = {name: mask.to_pylist() for name, mask in _missing(table).items()}
        bad = [(numbers[i], next(name for name, mask in missing.items() if mask[i]))
               for i in pc.indices_nonzero(incomplete).to_pylist()]
    table = table.filter(pc.invert(incomplete))
    inside = pc.and_(pc.greater_equal(table["timestamp"], week.start), pc.less(table["timestamp"], week.end))
    outside = table.num_rows - (pc.sum(inside).as_py() or 0)
    table = table.filter(inside)
    kinds = table["event_type"]
    alias_index = pc.index_in(kinds, value_set=week.alias_from)
    aliased = pc.and_(pc.invert(pc.is_in(kinds, value_set=_KNOWN)), pc.is_valid(alias_index))
    n_aliased = pc.sum(aliased).as_py() or 0
    if n_aliased:
        kinds = pc.if_else(aliased, pc.take(week.alias_to, alias_index), kinds)
    codes = pc.index_in(kinds, value_set=_KNOWN)
    keep = pc.is_valid(codes)
    unknown = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(pc.filter(kinds, pc.invert(keep))).to_pylist()}
    kind_codes = pa.chunked_array([pa.DictionaryArray.from_arrays(chunk.cast(pa.int8()), _KNOWN)
                                   for chunk in codes.chunks], type=EVENT_TYPE)
    events = pa.table([pc.utf8_upper(pc.utf8_trim_whitespace(table["customer_id"])), kind_codes,
                       table["timestamp"].cast(pa.timestamp("ns", tz="UTC")),
                       pc.struct_field(table["properties"], "feature"),
                       pc.struct_field(table["properties"], "amount_usd"), table["event_id"]], schema=_WITH_IDS)
    return _Piece(lines, events.filter(keep), bad, outside, int(n_aliased), unknown)



_REPEATS_SQL = """
SELECT * EXCLUDE (file, i) FROM (
    SELECT *, min(file) OVER (PARTITION BY event_id, customer_id, event_type, "timestamp", feature, amount_usd)
              AS first_file
    FROM events)
WHERE event_id IS NULL OR file = first_file ORDER BY i
"""


def _drop_repeated(events: pa.Table, files: pa.ChunkedArray) -> tuple[pa.Table, int]:
    """The events without redeliveries, as ``EVENTS_SCHEMA``, and how many were dropped.

    A redelivery is an event whose ``event_id`` and content an earlier file of the week already held (a sink
    connector's retried flush, a Kafka landing redone over other offsets): only the first file's copy counts.
    Events without an id are all kept, and so are events that share an id but differ (which one is genuine
    cannot be told) and repeats within one file (a file is one writer's sequence of records).
    """
    ids = events["event_id"]
    with_id = len(ids) - ids.null_count
    if not with_id or pc.count_distinct(ids).as_py() == with_id:  # no id twice: nothing to compare
        return events.drop_columns(["event_id"]), 0
    numbered = events.append_column("file", files).append_column("i", pa.array(range(len(events)), pa.int64()))
    with duckdb.connect() as con:
        con.register("events", numbered)
        kept = con.sql(_REPEATS_SQL).to_arrow_table()
    kept = kept.drop_columns(["first_file", "event_id"]).cast(EVENTS_SCHEMA)
    return kept, len(events) - kept.num_rows


def _load_chunk(data: bytes, start: int, end: int, first_line: int, week: _Week
                ) -> list[_Piece | tuple[int, int, int]]:
    """Worker-thread part of reading a chunk (pyarrow releases the GIL): parsed and tidied. A chunk that fails
    is halved at a line end, down to ``SMALL_CHUNK_BYTES``; what still fails comes back as
    ``(start, end, first line)`` for the line-level path, so a bad line costs a few re-parses, not a Python
    loop over a whole chunk."""
    parsed = _parse_chunk(data, start, end, first_line)
    if parsed is not None:
        return [_tidy(*parsed, week)]
    cut = data.find(b"\n", start + (end - start) // 2, end - 1) if end - start > SMALL_CHUNK_BYTES else -1
    if cut == -1:
        return [(start, end, first_line)]
    middle = cut + 1
    return (_load_chunk(data, start, middle, first_line, week)
            + _load_chunk(data, middle, end, first_line + data.count(b"\n", start, middle), week))


def _read_file(path: Path, data: bytes, scan: EventScan, pool: ThreadPoolExecutor, week: _Week
               ) -> list[pa.Table]:
    """The events of the week in one file's ``data`` as Arrow, parsed in chunks on a thread pool; only the part
    of a chunk around a bad line is read line by line."""
    tables = []
    for loaded in pool.map(lambda chunk: _load_chunk(data, *chunk, week), _chunks(data)):
        for part in loaded:
            if isinstance(part, _Piece):
                scan.lines += part.lines
                pieces = [part]
            else:
                start, end, first_line = part
                pieces = [_tidy(table, numbers, week)
                          for table, numbers in _parse_lines(data[start:end], first_line, path, scan)]
            for piece in pieces:
                for line, missing in piece.incomplete_lines:
                    _malformed(scan, path, line, "missing or blank", missing)
                scan.outside_week += piece.outside_week
                scan.aliased += piece.aliased
                for kind, count in piece.unknown_types.items():
                    scan.unknown_types[kind] = scan.unknown_types.get(kind, 0) + count
                tables.append(piece.events)
    return tables


EVENT_SUFFIXES = (".json", ".jsonl")
# By name and by magic bytes (a connector may compress without renaming); only gzip is read (stdlib).
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2",
                        ".xz": "xz", ".lz4": "lz4", ".snappy": "snappy", ".sz": "snappy", ".zip": "zip",
                        ".deflate": "deflate", ".lzo": "lzo", ".br": "brotli"}
_MAGIC = re.compile(rb"(?P<gzip>\x1f\x8b)|(?P<zstd>\x28\xb5\x2f\xfd)|(?P<bzip2>BZh[1-9])|(?P<xz>\xfd7zXZ\x00)"
                    rb"|(?P<lz4>\x04\x22\x4d\x18)|(?P<snappy>\xff\x06\x00\x00sNaPpY)|(?P<zip>PK\x03\x04)")


class _Skipped(Exception):
    """A file of the landing zone that is not read, with the reason (for the scan and the log)."""


def _compression(path: Path) -> str | None:
    """The compression a file's name announces; ``_Skipped`` when it is not an events file at all."""
    by_name = COMPRESSION_SUFFIXES.get(path.suffix.lower())
    inner = Path(path.stem).suffix if by_name else path.suffix
    if inner.lower() not in EVENT_SUFFIXES:
        raise _Skipped("not an events file: only .json and .jsonl files, optionally gzip-compressed "
                       "(.jsonl.gz), are read")
    return by_name


def _load(path: Path) -> bytes:
    """A file's JSON lines, decompressed when gzip (by name or by its first bytes); ``_Skipped`` for another
    compression or a broken gzip stream, so that binary data is never read as thousands of malformed lines."""
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
            raise _Skipped("named .gz but not gzip data: recompress it with gzip or rename it to .jsonl")
        compression = by_name
    if compression is None:
        return raw
    if compression != "gzip":
        raise _Skipped(f"compressed with {compression}: not supported, decompress it or write .jsonl/.jsonl.gz")
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _Skipped(f"gzip data is truncated or corrupt ({exc}): copy it again, or move it away while a "
                       "writer still writes it") from None


def _described(example: dict) -> str:
    return f"{example['field']}: {example['error']}" if example.get("field") else example["error"]


def _warn_malformed(scan: EventScan, shown: int, log: logging.Logger) -> int:
    """Log the malformed lines found since the last call, up to ``MAX_WARNINGS`` in all; return how many are."""
    for example in scan.malformed[shown:MAX_WARNINGS]:
        log.warning(f"skipping malformed event {example['file']}:{example['line']} ({_described(example)})")
    return max(shown, min(len(scan.malformed), MAX_WARNINGS))


def _check_share(scan: EventScan, max_malformed_share: float) -> None:
    """Stop a week whose lines are mostly broken (a binary file, a wrong format): its aggregates would be
    wrong rather than incomplete. Lines of skipped files are not lines."""
    if not scan.lines or scan.malformed_lines / scan.lines <= max_malformed_share:
        return
    examples = "; ".join(f"{m['file']}:{m['line']}: {_described(m)}" for m in scan.malformed[:3])
    raise MalformedEventsError(
        f"{scan.malformed_lines / scan.lines:.1%} of the week's event lines are malformed "
        f"({scan.malformed_lines:,} of {scan.lines:,}), above the limit of {max_malformed_share:.1%}. "
        f"First: {examples}. Fix or move the files, or raise EVENTS_MAX_MALFORMED_SHARE.", scan)


def read_week(root: Path, start: datetime, end: datetime, aliases: dict[str, str] | None = None, *,
              log: logging.Logger = log, max_malformed_share: float = 0.05) -> tuple[pa.Table, EventScan]:
    """The week's well-formed events of known types (Arrow, ``EVENTS_SCHEMA``); malformed lines counted,
    logged (the first ``MAX_WARNINGS``, then one line with the rest's count) and skipped.

    ``log`` is where warnings go (an asset passes ``context.log``, so they reach the run's event log). Files
    that are not events (another suffix, a compression other than gzip) are listed in ``skipped_files``. More
    than ``max_malformed_share`` of the lines malformed raises ``MalformedEventsError``.

    Files are parsed by pyarrow in ~2 MiB chunks on a thread pool, each chunk reduced to the week's events
    in its worker; a chunk with bad lines is halved until they stand in small parts, and only those take the
    line-level path, so a few broken lines do not cost a Python loop over the landing zone.
    """
    week = _Week.of(start, end, {**DEFAULT_ALIASES, **(aliases or {})})
    paths = [path for folder in day_folders(root, start, end) for path in sorted(folder.iterdir()) if path.is_file()]
    scan, tables, shown, files, paths_read = EventScan(), [], 0, [], []
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0)) or 2) as pool:
        for path in paths:  # one file in memory at a time: a connector's file can be hundreds of MB
            try:
                read = _read_file(path, _load(path), scan, pool, week)
                tables += read
                number = pa.scalar(len(paths_read), pa.int32())  # which file: repeats across files are redeliveries
                files += [pa.chunked_array([pa.repeat(number, t.num_rows)]) for t in read]
                paths_read.append(path)
            except _Skipped as skipped:
                scan.skipped_files.append({"file": str(path), "reason": str(skipped)})
                if len(scan.skipped_files) <= MAX_WARNINGS:
                    log.warning(f"skipping file {path}: {skipped}")
                continue
            scan.files += 1
            shown = _warn_malformed(scan, shown, log)
    if scan.malformed_lines > shown:
        log.warning(f"{scan.malformed_lines - shown:,} more malformed lines not shown ({scan.malformed_lines:,} "
                    "in total); see the asset's metadata `malformed_examples`")
    if len(scan.skipped_files) > MAX_WARNINGS:
        log.warning(f"{len(scan.skipped_files) - MAX_WARNINGS:,} more skipped files not shown "
                    f"({len(scan.skipped_files):,} in total); see the asset's metadata `skipped_files`")
    _check_share(scan, max_malformed_share)
    events, scan.repeated_events = _drop_repeated(
        pa.concat_tables(tables) if tables else _WITH_IDS.empty_table(),
        pa.chunked_array([c for f in files for c in f.chunks], pa.int32()))
    if scan.repeated_events:
        log.info(f"{scan.repeated_events:,} events repeated an event (event_id and content) of an earlier file "
                 "(a redelivery) and were dropped")
    return events, scan


AGGREGATE_SQL = """
SELECT customer_id,
       count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
       count(DISTINCT feature) FILTER (WHERE event_type = 'feature_used') AS unique_features_used,
       count(*) FILTER (WHERE event_type = 'purchase_completed') AS purchase_count,
       -- to the cent: a parallel sum adds in no fixed order, and a rerun must give the same value
       round(coalesce(sum(amount_usd) FILTER (WHERE event_type = 'purchase_completed'), 0), 2)::DOUBLE
           AS purchase_amount,
       count(*) FILTER (WHERE event_type = 'support_chat_started') AS support_interactions,
       max("timestamp") AS last_event_at
FROM events GROUP BY customer_id ORDER BY customer_id
"""


def aggregate(events: pa.Table) -> pd.DataFrame:
    """Per customer: page views, distinct features used, purchases and their amount, support chats.

    Grouped by DuckDB over the Arrow data (parallel, and faster than pandas on Arrow text): a week holds
    millions of events.
    """
    with duckdb.connect() as con:  # an empty week gives the same typed columns, no rows
        con.register("events", events)
        out = con.sql(AGGREGATE_SQL).to_arrow_table()
    last = out.schema.get_field_index("last_event_at")
    return out.set_column(last, "last_event_at", out["last_event_at"].cast(pa.timestamp("ns", tz="UTC"))).to_pandas()
