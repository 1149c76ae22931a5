"""Behavioural events from a landing zone of newline-delimited JSON files, one folder per day.

Layout (what a Kafka sink connector writes): ``<EVENTS_PATH>/dt=YYYY-MM-DD/<topic>+<partition>+<offset>.jsonl``.
A line is ``{"event_id", "event_type", "customer_id", "timestamp", "properties": {...}}``; ``feature_used``
carries ``properties.feature``, ``purchase_completed`` carries ``properties.amount_usd``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson

from customer_assets.logic.identity import standardise_ids

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


def week_of_day_folder(folder: Path) -> str | None:
    """The Monday partition key of a ``dt=YYYY-MM-DD`` folder."""
    try:
        day = datetime.strptime(folder.name, "dt=%Y-%m-%d").date()
    except ValueError:
        return None
    return (day - timedelta(days=day.weekday())).isoformat()


RAW_SCHEMA = pa.schema([
    ("event_type", pa.string()), ("customer_id", pa.string()), ("timestamp", pa.string()),
    ("properties", pa.struct([("feature", pa.string()), ("amount_usd", pa.float64())])),
])
_PARSE = pajson.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")


def _parse(lines: list[bytes], numbers: list[int], path: Path, scan: EventScan) -> list[tuple[pa.Table, list[int]]]:
    """Parse lines with pyarrow; a chunk that fails is halved until its bad lines stand alone (and are skipped)."""
    try:
        return [(pajson.read_json(io.BytesIO(b"\n".join(lines)), parse_options=_PARSE), numbers)]
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            _malformed(scan, path, numbers[0], str(exc))
            return []
        mid = len(lines) // 2
        return _parse(lines[:mid], numbers[:mid], path, scan) + _parse(lines[mid:], numbers[mid:], path, scan)


def _malformed(scan: EventScan, path: Path, line: int, error: str) -> None:
    scan.malformed.append({"file": str(path), "line": line, "error": error[:120]})
    log.warning("skipping malformed event %s:%d (%s)", path, line, error[:120])


def _read_file(path: Path, scan: EventScan) -> pd.DataFrame:
    numbered = [(n, line) for n, line in enumerate(path.read_bytes().splitlines(), start=1) if line.strip()]
    scan.lines += len(numbered)
    if not numbered:
        return pd.DataFrame()
    frames = []
    for table, numbers in _parse([line for _, line in numbered], [n for n, _ in numbered], path, scan):
        props = table.column("properties").combine_chunks()
        frame = pd.DataFrame({
            "line": numbers, "event_type": table.column("event_type").to_pandas(),
            "customer_id": table.column("customer_id").to_pandas(),
            "timestamp": pd.to_datetime(table.column("timestamp").to_pandas(), utc=True, format="ISO8601",
                                        errors="coerce"),
            "feature": props.field("feature").to_pandas(), "amount_usd": props.field("amount_usd").to_pandas()})
        incomplete = frame["event_type"].isna() | frame["customer_id"].isna() | frame["timestamp"].isna()
        for line in frame.loc[incomplete, "line"]:
            _malformed(scan, path, int(line), "event_type, customer_id or a valid timestamp is missing")
        frames.append(frame.loc[~incomplete])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_week(root: Path, start: datetime, end: datetime, aliases: dict[str, str] | None = None
              ) -> tuple[pd.DataFrame, EventScan]:
    """The week's well-formed events of known types; malformed lines counted, logged and skipped.

    Files are parsed by pyarrow in one go; only a file with bad lines is split, until each bad line is
    isolated, so a few broken lines do not cost a Python loop over the whole landing zone.
    """
    aliases = {**DEFAULT_ALIASES, **(aliases or {})}
    scan, frames = EventScan(), []
    for folder in day_folders(root, start, end):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")):
            scan.files += 1
            frames.append(_read_file(path, scan))
    columns = ["customer_id", "event_type", "timestamp", "feature", "amount_usd"]
    events = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else \
        pd.DataFrame({"customer_id": [], "event_type": [], "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                      "feature": [], "amount_usd": pd.Series(dtype=float)})
    inside = (events["timestamp"] >= pd.Timestamp(start)) & (events["timestamp"] < pd.Timestamp(end))
    scan.outside_week = int((~inside).sum())
    events = events.loc[inside]
    aliased = ~events["event_type"].isin(EVENT_TYPES) & events["event_type"].isin(list(aliases))
    scan.aliased = int(aliased.sum())
    events = events.assign(event_type=events["event_type"].where(~aliased, events["event_type"].map(aliases)))
    unknown = ~events["event_type"].isin(EVENT_TYPES)
    scan.unknown_types = {str(k): int(v) for k, v in events.loc[unknown, "event_type"].value_counts().items()}
    events = events.loc[~unknown, columns].reset_index(drop=True)
    events["customer_id"] = standardise_ids(events["customer_id"])
    events["amount_usd"] = pd.to_numeric(events["amount_usd"], errors="coerce")
    return events, scan


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
