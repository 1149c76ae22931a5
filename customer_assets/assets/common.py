"""What every asset of the weekly pipeline shares: partitions, owners, the week's context."""


import warnings

import dagster as dg

from customer_assets.deployments import deployment_name
from customer_assets.partitions import weekly_partitions
from customer_assets.weeks import WeekContext

ETL = "etl"
WAREHOUSE = "customer_analytics"
OWNERS = ["team:data-engineering"]
PARTITIONS = weekly_partitions
# Where a warehouse table lives, as the UI's kind icon: DuckDB locally, BigQuery in production.
WAREHOUSE_KIND = "bigquery" if deployment_name() == "prod" else "duckdb"


def week_context(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> WeekContext:
    return WeekContext.of(context.partition_key)


def check_spec(name: str, asset: dg.AssetKey | str, **kwargs) -> dg.AssetCheckSpec:
    """A check of one week: recorded per partition, so the UI shows which week passed or failed (partitioned
    checks are a Dagster preview; dagster is pinned in pyproject.toml)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=PARTITIONS, **kwargs)


def metadata_value(record, name: str):
    """The value of metadata entry ``name`` of a materialization record (None without the record or entry)."""
    entry = record.asset_materialization.metadata.get(name) if record and record.asset_materialization else None
    return entry.value if entry is not None else None


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition_key: str):
    """The newest materialization record of one partition of ``key``, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition_key]), limit=1).records
    return records[0] if records else None
