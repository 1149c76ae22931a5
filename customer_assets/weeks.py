"""The pipeline's week: Monday 00:00 UTC to the next Monday, keyed by that Monday (no Dagster
needed).

The one owner of what a week is: its key and bounds, the Monday of a day, the first week, the week
before, and the context the week's checks and transforms are computed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

DEFAULT_FIRST_WEEK = "2026-01-05"
# The embedded demo's first seeded week (``SeedConfig``: 12 weeks ending 2026-11-16): with no
# DB_HOST the partitions start there, so the UI offers no week the demo cannot have.
DEMO_FIRST_WEEK = "2026-08-31"


@dataclass(frozen=True)
class WeekContext:
    """The week being processed and the moment of processing (what "future" and "now" mean for its
    rules). Steps call it ``span``, apart from Dagster's ``context``."""

    week_start: datetime
    week_end: datetime
    now: datetime

    @classmethod
    def of(cls, partition_key: str, now: datetime | None = None) -> WeekContext:
        start, end = week_bounds(partition_key)
        return cls(week_start=start, week_end=end, now=now or datetime.now(timezone.utc))


def monday_of(day: date) -> date:
    """The Monday of the week that contains ``day``: its partition key."""
    return day - timedelta(days=day.weekday())


def week_bounds(partition_key: str) -> tuple[datetime, datetime]:
    """Return the [start, end) UTC datetimes of the week whose Monday is ``partition_key``."""
    start_day = date.fromisoformat(partition_key)
    if start_day.weekday() != 0:
        raise ValueError(f"week partition key {partition_key!r} is not a Monday")
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=7)


def previous_week(partition_key: str) -> str:
    return (date.fromisoformat(partition_key) - timedelta(days=7)).isoformat()


def first_week(configured: str | None, embedded_demo: bool) -> str:
    """The first partition: the configured Monday, else the embedded demo's first week, else
    2026-01-05, so that a deployment's partitions start where its source's history starts."""
    key = configured or (DEMO_FIRST_WEEK if embedded_demo else DEFAULT_FIRST_WEEK)
    try:
        week_bounds(key)
    except ValueError as exc:
        raise ValueError(
            f"PIPELINE_FIRST_WEEK={key!r} must be a Monday as YYYY-MM-DD: {exc}"
        ) from None
    return key
