"""Load: the week's transformed transactions into the warehouse table."""


import dagster as dg

from customer_assets.assets.common import ETL, OWNERS, PARTITIONS, WAREHOUSE
from customer_assets.io_managers.frames import StoredFrame
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import TransformedTransactionsFileType


@dg.asset(
    key_prefix=[WAREHOUSE],
    ins={"transformed_transactions": dg.AssetIn(key=[ETL, "transformed_transactions"])},
    partitions_def=PARTITIONS,
    group_name="warehouse",
    kinds={"pandas", "warehouse"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "timestamp", "unique_key": "transaction_id"},
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


DUPLICATED_IDS_SQL = """
SELECT transaction_id, count(*) AS copies FROM {table}
GROUP BY transaction_id HAVING count(*) > 1 ORDER BY copies DESC, transaction_id
"""


@dg.asset_check(asset=weekly_transactions, blocking=True,
                description="transaction_id is unique across every week of the warehouse table: a transaction "
                "whose timestamp moved to another week was moved, not copied. Scans the id column of the whole "
                "table (one column: in BigQuery its bytes, not the table's).")
def transaction_ids_unique(warehouse: WarehouseSQL) -> dg.AssetCheckResult:
    table = warehouse.table(*weekly_transactions.key.path)
    duplicated = warehouse.query(DUPLICATED_IDS_SQL, table=table)
    examples = duplicated.head(5)
    return dg.AssetCheckResult(
        passed=duplicated.empty,
        metadata={"duplicated_ids": len(duplicated),
                  "examples": dg.MetadataValue.md(examples.to_markdown(index=False) if len(examples) else "none")})
