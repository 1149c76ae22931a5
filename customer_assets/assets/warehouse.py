"""Load: the week's transformed transactions into the warehouse table."""


import dagster as dg

from customer_assets.assets.common import ETL, OWNERS, PARTITIONS, WAREHOUSE
from customer_assets.io_managers.frames import StoredFrame
from customer_assets.schemas import TransformedTransactionsFileType


@dg.asset(
    key_prefix=[WAREHOUSE],
    ins={"transformed_transactions": dg.AssetIn(key=[ETL, "transformed_transactions"])},
    partitions_def=PARTITIONS,
    group_name="warehouse",
    kinds={"pandas", "warehouse"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "timestamp"},
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
