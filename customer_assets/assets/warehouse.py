"""Load: the week's transformed transactions into the warehouse table."""


import dagster as dg

from customer_assets.assets.common import ETL, OWNERS, PARTITIONS, WAREHOUSE
from customer_assets.io_managers.frames import StoredFrame
from customer_assets.io_managers.warehouse import unique_window
from customer_assets.weeks import week_bounds
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import TransformedTransactionsFileType


# How many weeks either side of a loaded week a transaction id is kept unique over: a transaction whose
# timestamp an edit moved by up to half a year is moved, not copied, and neither the load nor the check reads more
# than those weeks, however long the history grows.
UNIQUE_WITHIN_WEEKS = 26


@dg.asset(
    key_prefix=[WAREHOUSE],
    ins={"transformed_transactions": dg.AssetIn(key=[ETL, "transformed_transactions"])},
    partitions_def=PARTITIONS,
    group_name="warehouse",
    kinds={"pandas", "warehouse"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "timestamp", "unique_key": "transaction_id", "unique_within_weeks": UNIQUE_WITHIN_WEEKS},
    dagster_type=TransformedTransactionsFileType,
)
def weekly_transactions(transformed_transactions: StoredFrame) -> StoredFrame:
    """`customer_analytics.weekly_transactions`: one row per transformed transaction of the week.

    The warehouse IO manager replaces exactly this week's rows in one transaction (DuckDB locally,
    BigQuery in production), verifies the week's row count against this frame, and writes a load report
    (rows_loaded, load_timestamp, destination_table, execution_time_seconds).

    The week goes from the transform's Parquet file to the warehouse without becoming a DataFrame: DuckDB
    reads the file itself, BigQuery receives it as load-job Parquet written a batch at a time.
    """
    return transformed_transactions


# Ids of the week held twice: within the week, or by another week of the window.
DUPLICATED_IDS_SQL = """
SELECT transaction_id, count(*) AS copies FROM {table}
WHERE {ts} >= @window_start AND {ts} < @window_end
  AND transaction_id IN (SELECT transaction_id FROM {table} WHERE {ts} >= @week_start AND {ts} < @week_end)
GROUP BY transaction_id HAVING count(*) > 1 ORDER BY copies DESC, transaction_id
"""


@dg.asset_check(asset=weekly_transactions, blocking=True,
                description="transaction_id is unique: no id of the week is held twice, within the week or by "
                f"another week up to {UNIQUE_WITHIN_WEEKS} weeks away (a transaction whose timestamp moved was "
                "moved, not copied). Reads those weeks only, so its cost does not grow with the history.")
def transaction_ids_unique(context: dg.AssetCheckExecutionContext, warehouse: WarehouseSQL) -> dg.AssetCheckResult:
    week_start, week_end = week_bounds(context.op_execution_context.partition_key)
    window_start, window_end = unique_window(week_start, week_end, UNIQUE_WITHIN_WEEKS)
    params = {"week_start": week_start, "week_end": week_end, "window_start": window_start, "window_end": window_end}
    duplicated = warehouse.query(DUPLICATED_IDS_SQL, params, table=warehouse.table(*weekly_transactions.key.path),
                                 ts=warehouse.quote("timestamp"))
    examples = duplicated.head(5)
    return dg.AssetCheckResult(
        passed=duplicated.empty,
        metadata={"duplicated_ids": len(duplicated), "window_weeks": UNIQUE_WITHIN_WEEKS,
                  "examples": dg.MetadataValue.md(examples.to_markdown(index=False) if len(examples) else "none")})
