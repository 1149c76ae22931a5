"""The weekly job and its schedule: Monday 02:00 UTC, for the week that just ended."""

from __future__ import annotations

import dagster as dg

from customer_assets.partitions import weekly_partitions

weekly_pipeline_job = dg.define_asset_job(
    "weekly_customer_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=weekly_partitions,
    description="Extract, validate, transform and load one week, then clean up.",
)

# With end_offset 0 the newest partition is the last complete week, so Monday's tick runs last week.
weekly_schedule = dg.build_schedule_from_partitioned_job(
    weekly_pipeline_job,
    hour_of_day=2,
    minute_of_hour=0,
    description="Every Monday at 02:00 UTC: the week that just ended (Monday to Monday, keyed by its Monday), "
    "extracted, checked, loaded and cleaned up; the warehouse is due fresh by 06:00.",
)
