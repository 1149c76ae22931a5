"""The analysts' star schema: dim_date, dim_products (type 2 over the weekly catalogue), and the
transaction facts keyed to the dimension rows of their time; dim_customers is built with the
profiles."""

import dagster as dg

from customer_assets import tables
from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import (
    OWNERS,
    PARTITIONS,
    WAREHOUSE,
    check_result,
    check_spec,
    check_stored_rows,
    keeps_working_files,
    week_context,
    working_files,
)
from customer_assets.assets.warehouse import UNIQUE_WITHIN_WEEKS
from customer_assets.assets.week_order import after_previous_week
from customer_assets.dagster_types import (
    DimDateType,
    FactTransactionsFileType,
    FactTransactionsQuarantineFileType,
    ProductSnapshotsType,
    check_fact_transactions,
    check_fact_transactions_quarantine,
    column_schema,
)
from customer_assets.frames import StoredFrame
from customer_assets.lineage import lineage_metadata, lineage_schema
from customer_assets.logic import checks
from customer_assets.logic.star import dim_date_rows
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import DimDate, FactTransactionsQuarantine, ProductSnapshots
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import take_replaced_count
from customer_assets.sources.customers_and_products import products_snapshot
from customer_assets.sql.scd2 import PRODUCTS, apply_week, fact_keys
from customer_assets.sql.star import kept_snapshot, resolve_week
from customer_assets.suppression import holds_customer_ids

GROUP = "star"
FACT = tables.key(tables.FACT_TRANSACTIONS)
WAREHOUSE_TABLE = {
    "partitions_def": PARTITIONS,
    "group_name": GROUP,
    "owners": OWNERS,
    "io_manager_key": "warehouse_io_manager",
}


@dg.asset(
    key_prefix=[WAREHOUSE],
    kinds={"postgres"},
    dagster_type=ProductSnapshotsType,
    metadata={
        "partition_expr": "week_start",
        "dagster/column_schema": column_schema(ProductSnapshots),
    },
    **WAREHOUSE_TABLE,
)
def product_snapshots(
    context: dg.AssetExecutionContext, source_db: PostgresSource, warehouse: WarehouseSQL
):
    """`customer_analytics.product_snapshots`: the product catalogue as extracted in the week (id,
    name, category, price), which `dim_products` versions. Extracted the first time the week runs
    and kept when it re-runs: the catalogue of today must not be backdated into a past week's
    versions."""
    week_start = week_context(context).week_start.replace(tzinfo=None)
    kept = kept_snapshot(warehouse, WAREHOUSE, week_start)
    if len(kept):
        context.log.info(
            f"product catalogue of {context.partition_key} kept as first extracted ({len(kept)} products)"
        )
        return dg.Output(kept, metadata={"dagster/row_count": len(kept), "mode": "kept"})
    with source_db.connect() as conn:
        snapshot = products_snapshot(conn, source_db.schema(conn, ("products",)))
    replaced = take_replaced_count(snapshot)
    return dg.Output(
        snapshot.assign(week_start=week_start),
        metadata={
            "dagster/row_count": len(snapshot),
            "mode": "extracted",
            "invalid_encoding_values": replaced,
        },
    )


@dg.asset(
    key_prefix=[WAREHOUSE],
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"sql"},
    owners=OWNERS,
    deps=[product_snapshots],
)
def dim_products(
    context: dg.AssetExecutionContext, warehouse: WarehouseSQL, settings: PipelineSettings
) -> dg.MaterializeResult:
    """`customer_analytics.dim_products`, SCD type 2 over name, category and price (product_key,
    effective_from, effective_to, is_current, version), maintained by one SQL MERGE per week like
    `dim_customers`; after the week before, when weeks run at once (``week_order.py``)."""
    waited = after_previous_week(context, settings.previous_week_wait_seconds)
    summary = apply_week(warehouse, WAREHOUSE, week_context(context).week_start, PRODUCTS)
    return dg.MaterializeResult(
        metadata={
            **waited,
            "dagster/row_count": int(summary["versions"]),
            "products": int(summary["current_versions"]),
            "versions_starting_this_week": int(summary["versions_starting_this_week"]),
            "facts_rekeyed": int(summary["facts_rekeyed"]),
        }
    )


@dg.asset(
    key_prefix=[WAREHOUSE],
    kinds={"pandas"},
    dagster_type=DimDateType,
    metadata={"partition_expr": "date", "dagster/column_schema": column_schema(DimDate)},
    **WAREHOUSE_TABLE,
)
def dim_date(context: dg.AssetExecutionContext):
    """`customer_analytics.dim_date`: one row per day (date_key yyyymmdd, calendar and ISO-week
    attributes), the week's seven days added with the week."""
    return dim_date_rows(week_context(context))


def key_checks(
    warehouse: WarehouseSQL, loaded: int, fact_rows: int, quarantined: int, reasons: dict
) -> list[dg.AssetCheckResult]:
    """The facts' two checks: the week's transactions each resolved (``referential_integrity``),
    and, once the week's facts are written, every key of the whole table (``fact_keys_resolve``)."""
    result = check_result(
        FACT,
        "referential_integrity",
        checks.keys_resolve(loaded, fact_rows, reasons),
        loaded=loaded,
        fact_rows=fact_rows,
        quarantined=quarantined,
    )
    keys = fact_keys(warehouse, WAREHOUSE)
    resolved = check_result(
        FACT,
        "fact_keys_resolve",
        checks.fact_keys_resolve(
            keys["facts_scanned"],
            keys["facts_with_dangling_customer_key"],
            keys["facts_with_dangling_product_key"],
            keys["dangling_customer_keys"],
            keys["dangling_product_keys"],
            {"customer": keys["example_customer_key"], "product": keys["example_product_key"]},
        ),
        dangling_customer_keys=keys["dangling_customer_keys"],
        dangling_product_keys=keys["dangling_product_keys"],
        facts_with_dangling_customer_key=keys["facts_with_dangling_customer_key"],
        facts_with_dangling_product_key=keys["facts_with_dangling_product_key"],
        facts_scanned=keys["facts_scanned"],
    )
    return [result, resolved]


@dg.multi_asset(
    name=FACT.to_python_identifier(),
    outs={
        tables.FACT_TRANSACTIONS: dg.AssetOut(
            key=FACT,
            kinds={"sql"},
            owners=OWNERS,
            io_manager_key="warehouse_io_manager",
            dagster_type=FactTransactionsFileType,
            tags=holds_customer_ids() | keeps_working_files(),
            metadata={
                "partition_expr": "timestamp",
                "unique_key": "transaction_id",
                "unique_within_weeks": UNIQUE_WITHIN_WEEKS,
                "dagster/column_schema": lineage_schema(tables.FACT_TRANSACTIONS),
            },
            description="`customer_analytics.fact_transactions`: one row per loaded transaction, with the "
            "surrogate keys of the customer and product versions valid at its time and its day.",
        ),
        tables.FACT_TRANSACTIONS_QUARANTINE: dg.AssetOut(
            key=tables.key(tables.FACT_TRANSACTIONS_QUARANTINE),
            kinds={"sql"},
            owners=OWNERS,
            io_manager_key="warehouse_io_manager",
            dagster_type=FactTransactionsQuarantineFileType,
            tags=holds_customer_ids(),
            metadata={
                "partition_expr": "timestamp",
                "dagster/column_schema": column_schema(FactTransactionsQuarantine),
            },
            description="Loaded transactions whose keys resolve to no dimension row, or to several, with the "
            "reason; never dropped silently.",
        ),
    },
    deps=[
        tables.key(name)
        for name in (
            tables.WEEKLY_TRANSACTIONS,
            tables.DIM_CUSTOMERS,
            tables.DIM_PRODUCTS,
            tables.DIM_DATE,
            tables.CUSTOMER_IDENTITY_MAP,
        )
    ],
    partitions_def=PARTITIONS,
    group_name=GROUP,
    check_specs=[
        check_spec(
            "referential_integrity",
            FACT,
            blocking=True,
            description=(
                "Every loaded transaction of the week is a fact row whose customer, product and date keys each resolve "
                "to exactly one dimension row; a transaction that does not is quarantined with its reason and fails "
                "this check (the marts wait)."
            ),
        ),
        check_spec(
            "fact_keys_resolve",
            FACT,
            blocking=True,
            description=(
                "Over the whole fact table (every week), every customer_key is a key of dim_customers and every "
                "product_key a key of dim_products: a dimension's backfill re-keys the later weeks' facts, and a key "
                "left dangling fails this check (the marts wait)."
            ),
        ),
    ],
)
def fact_transactions(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseSQL,
    settings: PipelineSettings,
    alerts: Alerts,
):
    """Resolved in the warehouse (``sql/star.py``): the week's rows go from its query to two Parquet
    files a batch at a time, are checked a batch at a time, and are loaded from the files; the week
    is never a frame."""
    files = working_files(context, settings, FACT, "facts", "quarantine")
    try:
        loaded = resolve_week(warehouse, WAREHOUSE, week_context(context), *files)
        facts, quarantined = StoredFrame(files[0]), StoredFrame(files[1])
        check_stored_rows(facts, check_fact_transactions, unique="transaction_id")
        check_stored_rows(quarantined, check_fact_transactions_quarantine)
        # By primary reason (the first code), as the validation's quarantine counts: each row once.
        codes = quarantined.read(["reason_codes"])["reason_codes"]
        reasons = codes.str.split(";").str[0].value_counts().to_dict() if len(codes) else {}
        yield dg.Output(
            facts,
            output_name=tables.FACT_TRANSACTIONS,
            metadata={
                "dagster/row_count": len(facts),
                **lineage_metadata(tables.FACT_TRANSACTIONS),
            },
        )
        yield dg.Output(
            quarantined,
            output_name=tables.FACT_TRANSACTIONS_QUARANTINE,
            metadata={
                "dagster/row_count": len(quarantined),
                "reasons": dg.MetadataValue.json(reasons),
            },
        )
    finally:  # in the warehouse by now (or failed): no file of the week outlives the step
        for path in files:
            path.unlink(missing_ok=True)
    # After the week's facts are written (the outputs above are stored as they are yielded).
    results = key_checks(warehouse, loaded, len(facts), len(quarantined), reasons)
    alert_failed_checks(alerts, results, context.partition_key, context.log)
    yield from results
