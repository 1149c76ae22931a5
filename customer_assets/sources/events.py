"""Behavioural events from a landing zone of newline-delimited JSON files, one folder per day.

Layout (what a Kafka sink connector writes): ``<EVENTS_PATH>/dt=YYYY-MM-DD/<topic>+<partition>+<offset>.jsonl``.
A line is ``{"event_id", "event_type", "customer_id", "timestamp", "properties": {...}}``; ``feature_used``
carries ``properties.feature``, ``purchase_completed`` carries ``properties.amount_usd``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson


log = logging.getLogger(__name__)

EVENT_TYPES = ("page_view", "feature_used", "purchase_completed", "support_chat_started")
DEFAULT_ALIASES = {"pageview": "page_view", "page_viewed": "page_view", "feature_use": "feature_used",
                   "order_completed": "purchase_completed", "purchase": "purchase_completed",
                   "chat_started": "support_chat_started", "support_chat": "support_chat_started"}
AGGREGATE_COLUMNS = ["customer_id", "page_views", "unique_features_used", "purchase_count", "purchase_amount",
                     "support_interactions", "last_event_at"]


@dataclass
class EventScan:
    """What reading a week of the landing zone found."""

    files: int = 0
    lines: int = 0
    malformed: list[dict] = field(default_factory=list)
    outside_week: int = 0
    unknown_types: dict[str, int] = field(default_factory=dict)
    aliased: int = 0

    def summary(self) -> dict:
        return {"files": self.files, "lines": self.lines, "malformed_lines": len(self.malformed),
                "malformed_examples": self.malformed[:20], "outside_week": self.outside_week,
                "unknown_types": self.unknown_types, "aliased": self.aliased}


def day_folders(root: Path, start: datetime, end: datetime) -> list[Path]:
    """Folders that may hold the week's events: its days, plus one either side for late or early files."""
    days = pd.date_range((start - timedelta(days=1)).date(), end.date(), freq="D")
    return [root / f"dt={d.date().isoformat()}" for d in days if (root / f"dt={d.date().isoformat()}").is_dir()]


RAW_SCHEMA = pa.schema([
    ("event_type", pa.string()), ("customer_id", pa.string()),
    # ISO 8601 with or without an offset, converted to UTC by the parser; a value that is not is a bad line.
    ("timestamp", pa.timestamp("us", tz="UTC")),
    ("properties", pa.struct([("feature", pa.string()), ("amount_usd", pa.float64())])),
])
_PARSE = pajson.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")


def _malformed(scan: EventScan, path: Path, line: int, error: str) -> None:
    scan.malformed.append({"file": str(path), "line": line, "error": error[:120]})
    log.warning("skipping malformed event %s:%d (%s)", path, line, error[:120])


def _parse(lines: list[bytes], numbers: Sequence[int], path: Path, scan: EventScan
           ) -> list[tuple[pa.Table, Sequence[int]]]:
    """Parse lines with pyarrow; a chunk that fails is halved until its bad lines stand alone (and are skipped)."""
    try:
        return [(pajson.read_json(io.BytesIO(b"\n".join(lines)), parse_options=_PARSE), numbers)]
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            _malformed(scan, path, numbers[0], str(exc))
            return []
        mid = len(lines) // 2
        return _parse(lines[:mid], numbers[:mid], path, scan) + _parse(lines[mid:], numbers[mid:], path, scan)


BLOCK_LINES = 16_384
_SPACES_LINE = re.compile(rb"\n[ \t\r]+(?:\n|$)")  # starts with a literal: a fast scan


def _read_file(path: Path, scan: EventScan) -> pa.Table | None:
    """The file's events as Arrow, parsed in blocks; only a block with bad lines is split further."""
    data = path.read_bytes()
    lines = data.splitlines()
    numbers: Sequence[int] = range(1, len(lines) + 1)
    if not all(lines) or (lines and not lines[0].strip()) or _SPACES_LINE.search(data):
        # rare: drop blank lines but keep the real line numbers
        kept = [(n, line) for n, line in zip(numbers, lines) if line.strip()]
        numbers, lines = [n for n, _ in kept], [line for _, line in kept]
    scan.lines += len(lines)
    parts = []
    for first in range(0, len(lines), BLOCK_LINES):
        parts += _parse(lines[first:first + BLOCK_LINES], numbers[first:first + BLOCK_LINES], path, scan)
    tables = []
    for table, numbers in parts:
        blank_id = pc.equal(pc.utf8_trim_whitespace(table["customer_id"]), "")
        incomplete = pc.fill_null(pc.or_kleene(pc.or_kleene(pc.is_null(table["event_type"]), blank_id),
                                               pc.is_null(table["timestamp"])), True)
        for index in pc.indices_nonzero(incomplete).to_pylist():
            _malformed(scan, path, numbers[index], "event_type, customer_id or timestamp is missing")
        tables.append(table.filter(pc.invert(incomplete)))
    return pa.concat_tables(tables) if tables else None


def read_week(root: Path, start: datetime, end: datetime, aliases: dict[str, str] | None = None
              ) -> tuple[pd.DataFrame, EventScan]:
    """The week's well-formed events of known types; malformed lines counted, logged and skipped.

    Files are parsed by pyarrow in one go; only a file with bad lines is split, until each bad line is
    isolated, so a few broken lines do not cost a Python loop over the whole landing zone.
    """
    aliases = {**DEFAULT_ALIASES, **(aliases or {})}
    scan, tables = EventScan(), []
    for folder in day_folders(root, start, end):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")):
            scan.files += 1
            table = _read_file(path, scan)
            if table is not None:
                tables.append(table)
    raw = pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()
    inside = pc.and_(pc.greater_equal(raw["timestamp"], pa.scalar(start, pa.timestamp("us", tz="UTC"))),
                     pc.less(raw["timestamp"], pa.scalar(end, pa.timestamp("us", tz="UTC"))))
    scan.outside_week = raw.num_rows - pc.sum(inside).as_py() if raw.num_rows else 0
    raw = raw.filter(inside)
    kinds = raw["event_type"].to_pandas()
    aliased = ~kinds.isin(EVENT_TYPES) & kinds.isin(list(aliases))
    scan.aliased = int(aliased.sum())
    kinds = kinds.where(~aliased, kinds.map(aliases))
    unknown = ~kinds.isin(EVENT_TYPES)
    scan.unknown_types = {str(k): int(v) for k, v in kinds[unknown].value_counts().items()}
    ids = pc.utf8_upper(pc.utf8_trim_whitespace(raw["customer_id"]))
    props = raw["properties"].combine_chunks()
    events = pd.DataFrame({
        "customer_id": ids.to_pandas(), "event_type": kinds,
        "timestamp": raw["timestamp"].to_pandas().astype("datetime64[ns, UTC]"),
        "feature": props.field("feature").to_pandas(), "amount_usd": props.field("amount_usd").to_pandas(),
    }).loc[~unknown.to_numpy()]
    return events.reset_index(drop=True), scan


def aggregate(events: pd.DataFrame) -> pd.DataFrame:
    """Per customer: page views, distinct features used, purchases and their amount, support chats."""
    if events.empty:
        dtypes = {"customer_id": object, "page_views": "int64", "unique_features_used": "int64",
                  "purchase_count": "int64", "purchase_amount": float, "support_interactions": "int64",
                  "last_event_at": "datetime64[ns, UTC]"}
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    kind = events["event_type"]
    frame = events.assign(
        page_views=(kind == "page_view").astype("int64"),
        purchase_count=(kind == "purchase_completed").astype("int64"),
        purchase_amount=events["amount_usd"].where(kind == "purchase_completed", 0.0).fillna(0.0),
        support_interactions=(kind == "support_chat_started").astype("int64"),
        feature=events["feature"].where(kind == "feature_used"),
    )
    out = frame.groupby("customer_id").agg(
        page_views=("page_views", "sum"), unique_features_used=("feature", "nunique"),
        purchase_count=("purchase_count", "sum"), purchase_amount=("purchase_amount", "sum"),
        support_interactions=("support_interactions", "sum"), last_event_at=("timestamp", "max"))
    return out.reset_index()[AGGREGATE_COLUMNS]
