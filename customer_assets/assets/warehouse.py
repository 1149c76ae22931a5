"""Load: the week's transformed transactions into the warehouse table."""

import dagster as dg

from customer_assets.assets.common import OWNERS, PARTITIONS, WAREHOUSE, finished_week, intermediate
from customer_assets.dagster_types import TransformedTransactionsFileType
from customer_assets.frames import StoredFrame
from customer_assets.suppression import holds_customer_ids

# How many weeks either side of a loaded week a transaction id is kept unique over: a transaction
# whose timestamp an edit moved by up to half a year is moved, not copied, and neither the load nor
# the check reads more than those weeks, however long the history grows.
UNIQUE_WITHIN_WEEKS = 26


@dg.asset(
    key_prefix=[WAREHOUSE],
    ins={"transformed_transactions": intermediate("transformed_transactions", StoredFrame)},
    partitions_def=PARTITIONS,
    output_required=False,
    group_name="warehouse",
    kinds={"pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={
        "partition_expr": "timestamp",
        "unique_key": "transaction_id",
        "unique_within_weeks": UNIQUE_WITHIN_WEEKS,
    },
    tags=holds_customer_ids(),
    dagster_type=TransformedTransactionsFileType,
)
def weekly_transactions(context: dg.AssetExecutionContext, transformed_transactions: StoredFrame):
    """`customer_analytics.weekly_transactions`: one row per transformed transaction of the week.

    The warehouse IO manager replaces exactly this week's rows in one transaction (DuckDB locally,
    BigQuery in production), verifies the week's row count against this frame, and writes a load
    report (rows_loaded, load_timestamp, destination_table, execution_time_seconds).

    The week goes from the transform's Parquet file to the warehouse without becoming a DataFrame:
    DuckDB reads the file itself, BigQuery receives it as load-job Parquet written a batch at a
    time.
    """
    if finished_week(context, transformed_transactions):
        return
    yield dg.Output(transformed_transactions)
