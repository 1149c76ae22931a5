"""Weekly partitions: a week runs Monday 00:00 UTC to the next Monday, keyed by that Monday."""

from __future__ import annotations

import dagster as dg

from customer_assets.weeks import FIRST_WEEK, week_bounds

__all__ = ["FIRST_WEEK", "week_bounds", "weekly_partitions"]

# Dagster weeks start on Sunday unless day_offset says otherwise: Monday is 1.
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=FIRST_WEEK, day_offset=1, timezone="UTC")
