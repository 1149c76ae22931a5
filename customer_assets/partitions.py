"""Weekly partitions: a week runs Monday 00:00 UTC to the next Monday, keyed by that Monday."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg

FIRST_WEEK = "2026-01-05"

# Dagster weeks start on Sunday unless day_offset says otherwise: Monday is 1.
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=FIRST_WEEK, day_offset=1, timezone="UTC")


def week_bounds(partition_key: str) -> tuple[datetime, datetime]:
    """Return the [start, end) UTC datetimes of the week whose Monday is ``partition_key``."""
    start_day = date.fromisoformat(partition_key)
    if start_day.weekday() != 0:
        raise ValueError(f"week partition key {partition_key!r} is not a Monday")
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=7)
