"""The pipeline's week: Monday 00:00 UTC to the next Monday, keyed by that Monday (no Dagster needed)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

FIRST_WEEK = "2026-01-05"


def week_bounds(partition_key: str) -> tuple[datetime, datetime]:
    """Return the [start, end) UTC datetimes of the week whose Monday is ``partition_key``."""
    start_day = date.fromisoformat(partition_key)
    if start_day.weekday() != 0:
        raise ValueError(f"week partition key {partition_key!r} is not a Monday")
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=7)
