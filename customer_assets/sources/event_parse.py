"""Parsing the landing zone's JSON lines into the week's events, in parallel chunks.

A line is ``{"event_id", "event_type", "customer_id", "timestamp", "properties": {...}}``;
``feature_used`` carries ``properties.feature``, ``purchase_completed`` carries
``properties.amount_usd``. A file is cut into ~2 MiB chunks parsed by pyarrow on a thread pool (it
releases the GIL), each reduced in its worker to the week's events (``event_week.py``); only the
part of a chunk around a bad line takes the line-level path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson

from customer_assets.sources.event_week import Piece, WeekWindow, tidy

# malformed lines kept with file, line and error; a binary file would otherwise keep thousands
MAX_EXAMPLES = 100
# What is kept of a malformed line is where it is and what kind of error it holds (file, line,
# field, kind), never its text: the examples reach the run's event log, which erasure does not
# reach.


@dataclass
class EventScan:
    """What reading a week of the landing zone found.

    ``malformed_lines`` counts every malformed line; ``malformed`` keeps only the first
    ``MAX_EXAMPLES`` of them.
    """

    files: int = 0
    lines: int = 0
    malformed: list[dict] = field(default_factory=list)
    malformed_lines: int = 0
    skipped_files: list[dict] = field(default_factory=list)
    outside_week: int = 0
    unknown_types: dict[str, int] = field(default_factory=dict)
    aliased: int = 0
    # redeliveries dropped: same event_id and content as in an earlier file
    repeated_events: int = 0

    def summary(self) -> dict:
        return {
            "files": self.files,
            "lines": self.lines,
            "malformed_lines": self.malformed_lines,
            "malformed_examples": self.malformed[:20],
            "skipped_files": self.skipped_files,
            "outside_week": self.outside_week,
            "unknown_types": self.unknown_types,
            "aliased": self.aliased,
            "repeated_events": self.repeated_events,
        }


RAW_SCHEMA = pa.schema(
    [
        # event_id: a redelivered event (a sink connector's retry, a Kafka landing redone) is
        # counted once
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("customer_id", pa.string()),
        # ISO 8601 with or without an offset, converted to UTC by the parser; a value that is not is
        # a bad line.
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("properties", pa.struct([("feature", pa.string()), ("amount_usd", pa.float64())])),
    ]
)
_PARSE = pajson.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")
# one chunk, one block: threads are ours
_READ = pajson.ReadOptions(use_threads=False, block_size=4 << 20)


def _malformed(
    scan: EventScan, path: Path, line: int, error: str, field: str | None = None
) -> None:
    """Count a malformed line and keep the first ones as location and error kind; ``read_week`` logs
    them (a capped number). ``error`` is one of the fixed kinds below, never text of the line."""
    scan.malformed_lines += 1
    if len(scan.malformed) < MAX_EXAMPLES:
        scan.malformed.append({"file": str(path), "line": line, "field": field, "error": error})


# The error kind of a field that pyarrow cannot read as its type.
_KINDS = {
    pa.types.is_timestamp: "not an ISO 8601 time",
    pa.types.is_string: "not text",
    pa.types.is_floating: "not a number",
    pa.types.is_struct: "not an object",
}


def _kind(kind: pa.DataType) -> str:
    return next(text for test, text in _KINDS.items() if test(kind))


def _unreadable_field(value: dict, fields, prefix: str = "") -> tuple[str | None, str]:
    """Which field of a JSON object pyarrow cannot read as ``RAW_SCHEMA`` types it, and the kind of
    error: each field parsed alone (only for lines that already failed), so the error names no
    value."""
    for item in fields:
        part = json.dumps({item.name: value.get(item.name)}).encode()
        try:
            pajson.read_json(
                pa.BufferReader(part),
                read_options=_READ,
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema([item]), unexpected_field_behavior="ignore"
                ),
            )
        except pa.ArrowInvalid:
            inner = value.get(item.name)
            if pa.types.is_struct(item.type) and isinstance(inner, dict):
                return _unreadable_field(inner, list(item.type), f"{prefix}{item.name}.")
            return f"{prefix}{item.name}", _kind(item.type)
    return None, "not an event the reader can type"


def _read_json(data: bytes | memoryview) -> pa.Table:
    """Parse JSON lines into ``RAW_SCHEMA``; text that is not valid UTF-8 raises ``ArrowInvalid``
    like a syntax error (pyarrow's reader lets it through, and later string functions would fail on
    the whole week)."""
    table = pajson.read_json(
        pa.BufferReader(pa.py_buffer(data)), read_options=_READ, parse_options=_PARSE
    )
    table.validate(full=True)
    return table


def _parse(
    lines: list[bytes], numbers: Sequence[int], path: Path, scan: EventScan
) -> list[tuple[pa.Table, Sequence[int]]]:
    """Parse lines with pyarrow; lines that fail are halved until the bad ones stand alone (and are
    skipped)."""
    try:
        return [(_read_json(b"\n".join(lines)), numbers)]
    except pa.ArrowInvalid:
        if len(lines) == 1:
            field, kind = _unreadable_field(json.loads(lines[0]), RAW_SCHEMA)
            _malformed(scan, path, numbers[0], kind, field)
            return []
        mid = len(lines) // 2
        return _parse(lines[:mid], numbers[:mid], path, scan) + _parse(
            lines[mid:], numbers[mid:], path, scan
        )


CHUNK_BYTES = 2 << 20  # what a worker parses in one call: few calls, so little per-call work
SMALL_CHUNK_BYTES = 64 << 10  # a chunk that fails is halved down to this, then read line by line


_BLANK_OR_INDENTED = re.compile(rb"\n[\n \t\r]")  # one scan; starts with a literal, so a fast one


def _clean_lines(data: bytes, start: int, end: int) -> bool:
    """True when no line of ``data[start:end]`` is blank or starts with whitespace, so that row
    ``i`` of a parse is line ``i + 1``, and the text starts with an object (pyarrow 26 crashes on
    text that starts with a ``null`` line, apache/arrow#47409). Conservative: a line that merely
    starts with a space takes the line-level path, which reads it the same way."""
    return data[start : start + 1] == b"{" and not _BLANK_OR_INDENTED.search(data, start, end)


def _chunks(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, number of the first line)`` of ~``CHUNK_BYTES`` pieces cut at line ends (no
    per-line Python work)."""
    chunks, pos, line = [], 0, 1
    while pos < len(data):
        cut = data.find(b"\n", pos + CHUNK_BYTES)
        end = len(data) if cut == -1 else cut + 1
        chunks.append((pos, end, line))
        line += data.count(b"\n", pos, end)
        pos = end
    return chunks


def _utf8(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` is UTF-8 throughout. pyarrow checks only the fields it reads, and
    the line-level path (``json.loads``) every byte of a line: without this, a bad byte in an unread
    field (``event_id``) would make a line malformed or not depending on where the chunks fall."""
    piece = data[start:end]
    if piece.isascii():  # a few microseconds a megabyte
        return True
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_chunk(
    data: bytes, start: int, end: int, first_line: int
) -> tuple[pa.Table, Sequence[int]] | None:
    """A clean chunk parsed in one call; None when it needs the line-level path."""
    if not _clean_lines(data, start, end) or not _utf8(data, start, end):
        return None
    try:
        table = _read_json(memoryview(data)[start:end])
    except pa.ArrowInvalid:
        return None
    lines = data.count(b"\n", start, end) + (data[end - 1 : end] != b"\n")
    return (table, range(first_line, first_line + lines)) if table.num_rows == lines else None


def _parse_lines(
    chunk: bytes, first_line: int, path: Path, scan: EventScan
) -> list[tuple[pa.Table, Sequence[int]]]:
    """The slow path for a chunk with bad or blank lines: blank lines dropped, bad lines isolated
    and skipped.

    Lines that are not a JSON object (``null`` tombstones, broken or non-UTF-8 text) are found by
    ``json.loads`` (a chunk is a few thousand lines); what is an object but not an event pyarrow can
    type (a timestamp that is not one, say) is isolated by halving. Lines end at ``\n`` only, as in
    ``_chunks``.
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
            scalar = isinstance(value["event_id"], (int, float)) and not isinstance(
                value["event_id"], bool
            )
            value["event_id"] = str(value["event_id"]) if scalar else None
            line = json.dumps(value).encode()
        lines.append(line)
        numbers.append(number)
    return _parse(lines, numbers, path, scan) if lines else []


def _load_chunk(
    data: bytes, start: int, end: int, first_line: int, week: WeekWindow
) -> list[Piece | tuple[int, int, int]]:
    """Worker-thread part of reading a chunk (pyarrow releases the GIL): parsed and tidied. A chunk
    that fails is halved at a line end, down to ``SMALL_CHUNK_BYTES``; what still fails comes back
    as ``(start, end, first line)`` for the line-level path, so a bad line costs a few re-parses,
    not a Python loop over a whole chunk."""
    parsed = _parse_chunk(data, start, end, first_line)
    if parsed is not None:
        return [tidy(*parsed, week)]
    cut = (
        data.find(b"\n", start + (end - start) // 2, end - 1)
        if end - start > SMALL_CHUNK_BYTES
        else -1
    )
    if cut == -1:
        return [(start, end, first_line)]
    middle = cut + 1
    return _load_chunk(data, start, middle, first_line, week) + _load_chunk(
        data, middle, end, first_line + data.count(b"\n", start, middle), week
    )


def parse_file(
    path: Path, data: bytes, scan: EventScan, pool: ThreadPoolExecutor, week: WeekWindow
) -> list[pa.Table]:
    """The events of the week in one file's ``data`` as Arrow, parsed in chunks on a thread pool;
    only the part of a chunk around a bad line is read line by line."""
    tables = []
    for loaded in pool.map(lambda chunk: _load_chunk(data, *chunk, week), _chunks(data)):
        for part in loaded:
            if isinstance(part, Piece):
                scan.lines += part.lines
                pieces = [part]
            else:
                start, end, first_line = part
                pieces = [
                    tidy(table, numbers, week)
                    for table, numbers in _parse_lines(data[start:end], first_line, path, scan)
                ]
            for piece in pieces:
                for line, missing in piece.incomplete_lines:
                    _malformed(scan, path, line, "missing or blank", missing)
                scan.outside_week += piece.outside_week
                scan.aliased += piece.aliased
                for kind, count in piece.unknown_types.items():
                    scan.unknown_types[kind] = scan.unknown_types.get(kind, 0) + count
                tables.append(piece.events)
    return tables
