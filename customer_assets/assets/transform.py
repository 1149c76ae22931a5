"""Transform: USD amounts, time dimensions, customer and product metrics, segments."""

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WEEK_WIDE,
    finished_week,
    intermediate,
    week_context,
)
from customer_assets.assets.week_rates import week_rates
from customer_assets.dagster_types import (
    TransformedTransactionsBatchesType,
    check_transformed_transactions,
)
from customer_assets.frames import FrameBatches, StoredFrame, query_stored
from customer_assets.logic.currency import FX_SOURCE, last_rate_date
from customer_assets.logic.history import customer_totals, typed_history
from customer_assets.logic.transform import (
    EnrichedTotals,
    WeekFigures,
    WeekMetrics,
    enrich,
    week_metrics,
)
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.rates import EcbRates
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings
from customer_assets.sources.customers_and_products import category_prices
from customer_assets.sql.history import week_customer_totals
from customer_assets.weeks import WeekContext

HISTORY = tables.key(tables.CUSTOMER_HISTORY)

STALE_RATES_DAYS = 7


@dg.asset(
    op_tags=WEEK_WIDE,
    key_prefix=[ETL],
    ins={"validated_transactions": intermediate("validated_transactions", StoredFrame)},
    # read in the warehouse, the week's customers only (week_customer_totals)
    deps=[HISTORY],
    partitions_def=PARTITIONS,
    output_required=False,
    group_name="transform",
    kinds={"pandas"},
    owners=OWNERS,
    dagster_type=TransformedTransactionsBatchesType,
)
def transformed_transactions(
    context: dg.AssetExecutionContext,
    source_db: PostgresSource,
    rates: EcbRates,
    settings: PipelineSettings,
    warehouse: WarehouseSQL,
    validated_transactions: StoredFrame,
):
    """Validated transactions enriched for analytics.

    - `amount_usd` at the ECB reference rate of the transaction date (the last business day's rate
      on weekends and holidays), with `fx_rate`, `fx_rate_date` and `fx_source`; original amount and
      currency kept.
    - Time dimensions in UTC: day_of_week, hour_of_day, is_weekend, week_number (ISO), month,
      quarter.
    - Customer metrics as of the week's end over all history, from the carried `customer_history`
      (its rows of the week's customers, read in the warehouse): lifetime value (USD), transaction
      count, days since first purchase.
    - Product metrics: popularity rank by transactions in the week, the category's average catalogue
      price.
    - Segments: transaction small (< $50) / medium ($50-200) / large (> $200); customer new (first
      purchase < 30 days ago) / dormant (back after > 90 days without a purchase) / active.

    The week-wide figures (customer totals, product ranks) are aggregated by DuckDB over the week's
    file; the rows are then enriched, checked (TransformedTransactions) and written a batch at a
    time.
    """
    if finished_week(context, validated_transactions):
        return
    span = week_context(context)
    with source_db.connect() as conn:
        prices = category_prices(conn)
    rates_path = week_rates(settings, rates, context.partition_key)  # validation's: no fetch
    metrics = _week_metrics(validated_transactions, warehouse, span, prices, rates_path)
    if len(validated_transactions):
        _warn_if_stale(context, rates_path, span.week_end.date())
    totals = EnrichedTotals()

    def batches():
        for rows in validated_transactions.batches():
            enriched = enrich(rows, metrics, span)
            del rows
            totals.add(enriched)
            yield enriched

    yield dg.Output(
        FrameBatches(
            batches(),
            check=check_transformed_transactions,
            unique=["transaction_id"],
            summary=lambda: _metadata(totals.as_dict()),
            name="transformed_transactions",
        ),
        metadata={"fx_source": FX_SOURCE},
    )


def _week_metrics(
    validated: StoredFrame,
    warehouse: WarehouseSQL,
    span: WeekContext,
    prices: pd.DataFrame,
    rates_path: str,
) -> WeekMetrics:
    """The week-wide figures, per customer and product, by DuckDB reading the validated file (the
    week's rows are never one frame), with the carried history of the week's customers."""
    figures = WeekFigures.by(lambda sql: query_stored(validated.path, "week", sql))
    history = typed_history(week_customer_totals(warehouse, HISTORY.path, span.week_start))
    customers = customer_totals(
        history, span.week_end, figures.customers["customer_id"], rates_path
    )
    return week_metrics(figures, customers, prices, span)


def _warn_if_stale(context: dg.AssetExecutionContext, rates_path: str, week_end) -> None:
    """A warning when the rates in ``rates_path`` end more than STALE_RATES_DAYS before the week."""
    last_rate = last_rate_date(rates_path)
    stale_days = (week_end - last_rate).days - 1
    if stale_days > STALE_RATES_DAYS:
        context.log.warning(
            f"ECB rates in {rates_path} end on {last_rate}, {stale_days} days before the week's end: "
            "the last published rate is used (see fx_rate_date). Set ECB_RATES_FILE to a fresh eurofxref-hist.zip."
        )


def _metadata(totals: dict) -> dict:
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in totals.items()}
