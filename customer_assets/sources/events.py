"""Behavioural events from a landing zone of newline-delimited JSON files, one folder per day.

Layout (what a Kafka sink connector writes): ``<EVENTS_PATH>/dt=YYYY-MM-DD/<topic>+<partition>+<offset>.jsonl``.
A line is ``{"event_id", "event_type", "customer_id", "timestamp", "properties": {...}}``; ``feature_used``
carries ``properties.feature``, ``purchase_completed`` carries ``properties.amount_usd``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

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


def read_week(root: Path, start: datetime, end: datetime, aliases: dict[str, str] | None = None
              ) -> tuple[pd.DataFrame, EventScan]:
    """The week's well-formed events of known types; malformed lines counted, logged and skipped."""
    aliases = {**DEFAULT_ALIASES, **(aliases or {})}
    scan, rows = EventScan(), []
    for folder in day_folders(root, start, end):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")):
            scan.files += 1
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    scan.lines += 1
                    try:
                        event = json.loads(line)
                        ts = pd.Timestamp(event["timestamp"])
                        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
                        kind, customer = str(event["event_type"]), event["customer_id"]
                        props = event.get("properties") or {}
                        if not isinstance(props, dict) or customer in (None, ""):
                            raise ValueError("properties must be an object and customer_id present")
                    except (ValueError, KeyError, TypeError) as exc:
                        scan.malformed.append({"file": str(path), "line": number, "error": str(exc)[:120]})
                        log.warning("skipping malformed event %s:%d (%s)", path, number, str(exc)[:120])
                        continue
                    if not (start <= ts < end):
                        scan.outside_week += 1
                        continue
                    if kind not in EVENT_TYPES and kind in aliases:
                        kind, scan.aliased = aliases[kind], scan.aliased + 1
                    if kind not in EVENT_TYPES:
                        scan.unknown_types[kind] = scan.unknown_types.get(kind, 0) + 1
                        continue
                    rows.append((str(customer), kind, ts, props.get("feature"), props.get("amount_usd")))
    events = pd.DataFrame(rows, columns=["customer_id", "event_type", "timestamp", "feature", "amount_usd"])
    events["customer_id"] = standardise_ids(events["customer_id"])
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
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
