"""What every asset of the weekly pipeline shares: partitions, owners, the week's context."""


from datetime import datetime, timezone

import dagster as dg

from customer_assets.logic.validation import WeekContext
from customer_assets.partitions import week_bounds, weekly_partitions

ETL = "etl"
WAREHOUSE = "customer_analytics"
OWNERS = ["team:data-engineering"]
PARTITIONS = weekly_partitions


def week_context(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> WeekContext:
    start, end = week_bounds(context.partition_key)
    return WeekContext(week_start=start, week_end=end, now=datetime.now(timezone.utc))


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition_key: str):
    """The newest materialization record of one partition of ``key``, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition_key]), limit=1).records
    return records[0] if records else None
