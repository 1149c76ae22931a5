"""The weeks a run works on, read from its tags here only: the cleanup removes, and the erasure
leaves alone, the intermediates of exactly these weeks."""

from __future__ import annotations

import dagster as dg

PARTITION_TAG = "dagster/partition"


def run_week(run: dg.DagsterRun | None) -> str | None:
    """The week of a run of one partition (its ``dagster/partition`` tag); None for a range or for
    no partition."""
    return (run.tags.get(PARTITION_TAG) or None) if run is not None else None


def run_weeks(run: dg.DagsterRun | None) -> list[str]:
    """The weeks a run works on: its partition, or each week of its partition range."""
    if run is None:
        return []
    if run_week(run):
        return [run_week(run)]
    tags = run.tags
    start, end = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    if start and end:
        from customer_assets.partitions import weekly_partitions

        return list(weekly_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    return []
