"""Extract: the week's completed transactions from the source PostgreSQL."""


import pandas as pd
import psycopg2
import dagster as dg

from customer_assets.assets.common import ETL, OWNERS, PARTITIONS, week_context
from customer_assets.erasure import drop_suppressed
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.io_managers.types import RawTransactionsType
from customer_assets.sources.extract import stream_week, to_raw_frame, week_version

# Failures that another attempt may not meet: the connection dropped or was refused, a timeout, a server
# restarting. Anything else (a refused login, a missing grant, a value that does not parse) fails at once.
TRANSIENT_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionError, TimeoutError)

SOURCE_TRANSACTIONS = dg.AssetSpec(
    key=["source", "transactions"],
    partitions_def=PARTITIONS,
    group_name="extract",
    kinds={"postgres"},
    owners=OWNERS,
    description="The source database's completed transactions of each week (not materialized here: observed). "
    "Its data version per week is the row count and a checksum of what the extract reads; the sensor "
    "`source_changes` observes recent weeks and re-runs a loaded week whose version changed (a refund, a "
    "status change, an edited amount, a late row).",
)


@dg.asset(
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="extract",
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    dagster_type=RawTransactionsType,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    deps=[SOURCE_TRANSACTIONS],
)
def raw_transactions(context: dg.AssetExecutionContext, source_db: PostgresSource, warehouse: WarehouseSQL,
                     crm: CrmSource) -> dg.Output[pd.DataFrame]:
    """The week's `completed` transactions joined to their customer and product.

    Columns: transaction_id, customer_id, country, segment, amount, currency, timestamp, product_id,
    product_name, category, customer_created_at, and whether the customer and product exist.
    Email, phone and address are never selected; customers on the erasure suppression list are left out
    (counted in `suppressed_rows`). Transactions whose customer or product is missing are
    kept (outer side of the join) so that validation quarantines them: nothing is dropped here.
    The rows stream from `COPY ... TO STDOUT` in ~1 MiB blocks, so memory does not grow with the text.
    """
    ctx = week_context(context)
    try:
        with source_db.connect(context.log) as conn:  # one snapshot: the version describes the rows read
            schema = source_db.schema(conn)
            version = week_version(conn, ctx.week_start, ctx.week_end, schema)
            table = stream_week(conn, ctx.week_start, ctx.week_end, schema=schema)
    except (dg.Failure, *TRANSIENT_ERRORS):
        raise  # already classified, or worth the retry policy's next attempt
    except Exception as exc:  # a query or a value that will fail the same way next time
        raise dg.Failure(description=f"The extract of week {context.partition_key} failed in a way a retry "
                         f"cannot fix: {type(exc).__name__}: {exc}", allow_retries=False) from exc
    df = to_raw_frame(table)
    df, suppressed = drop_suppressed(df, warehouse, crm.hash_key)  # forgotten on request: never extracted again
    if suppressed:
        context.log.info(f"{suppressed} row(s) of erased customers left out (suppression list)")
    invalid = int(df["invalid_encoding"].notna().sum())
    if invalid:
        context.log.warning(f"{invalid} row(s) hold text that is not UTF-8; they are quarantined INVALID_ENCODING")
    return dg.Output(df, data_version=dg.DataVersion(version), metadata={
        "source_version": version,
        "dagster/row_count": len(df),
        "week_start": ctx.week_start.isoformat(),
        "week_end": ctx.week_end.isoformat(),
        "source": source_db.description,
        "source_route": source_db.route,
        "invalid_encoding_rows": invalid,
        "suppressed_rows": suppressed,
        "distinct_customers": int(df["customer_id"].nunique()),
    })
