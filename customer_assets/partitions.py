"""Weekly partitions: a week runs Monday 00:00 UTC to the next Monday, keyed by that Monday."""

from __future__ import annotations

from datetime import date

import click
import dagster as dg

from customer_assets.settings import first_week_from_env
from customer_assets.weeks import monday_of, week_bounds

__all__ = [
    "FIRST_WEEK",
    "NotAWeekError",
    "latest_materialization",
    "week_bounds",
    "weekly_partitions",
]


class NotAWeekError(click.UsageError):
    """A partition key that is a date but not a Monday: one line saying which Monday was meant.

    A click error, so that ``dagster asset materialize --partition`` prints that line instead of a
    traceback ending in "Could not find a partition"; from Python it is an ordinary exception with
    the same message.
    """


class MondayWeeks(dg.WeeklyPartitionsDefinition):
    """Weekly partitions keyed by their Monday, rejecting any other day with the Monday to use
    instead."""

    def validate_partition_key(self, partition_key: str, context) -> None:
        try:
            day = date.fromisoformat(partition_key)
        except ValueError:
            day = None
        if day is not None and day.weekday() != 0:
            monday = monday_of(day)
            raise NotAWeekError(
                f"--partition {partition_key} is a {day:%A}: weeks are keyed by their Monday; "
                f"use --partition {monday.isoformat()} for the week that contains {partition_key}."
            )
        super().validate_partition_key(partition_key, context)


# Read when the partitions are defined: the settings layer decides where the deployment's weeks
# start.
FIRST_WEEK = first_week_from_env()
# Dagster weeks start on Sunday unless day_offset says otherwise: Monday is 1.
weekly_partitions = MondayWeeks(start_date=FIRST_WEEK, day_offset=1, timezone="UTC")


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition_key: str):
    """The newest materialization record of one week (partition) of ``key``, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition_key]), limit=1
    ).records
    return records[0] if records else None
