"""Transform: USD amounts, time dimensions, customer and product metrics, segments."""


from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from customer_assets.assets.common import ETL, OWNERS, PARTITIONS, week_context
from customer_assets.logic.currency import FX_SOURCE, last_rate_date, rates_file
from customer_assets.logic.transform import transform_week
from customer_assets.resources.postgres import PostgresSource
from customer_assets.schemas import TransformedTransactionsType
from customer_assets.sources.extract import category_prices, customer_history

STALE_RATES_DAYS = 7


@dg.asset(
    key_prefix=[ETL],
    ins={"validated_transactions": dg.AssetIn(key=[ETL, "validated_transactions"])},
    partitions_def=PARTITIONS,
    group_name="transform",
    kinds={"pandas"},
    owners=OWNERS,
    dagster_type=TransformedTransactionsType,
)
def transformed_transactions(context: dg.AssetExecutionContext, source_db: PostgresSource,
                             validated_transactions: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """Validated transactions enriched for analytics.

    - `amount_usd` at the ECB reference rate of the transaction date (the last business day's rate on
      weekends and holidays), with `fx_rate`, `fx_rate_date` and `fx_source`; original amount and currency kept.
    - Time dimensions in UTC: day_of_week, hour_of_day, is_weekend, week_number (ISO), month, quarter.
    - Customer metrics as of the week's end over all history: lifetime value (USD), transaction count,
      days since first purchase.
    - Product metrics: popularity rank by transactions in the week, the category's average catalogue price.
    - Segments: transaction small (< $50) / medium ($50-200) / large (> $200); customer new (first purchase
      < 30 days ago) / dormant (back after > 90 days without a purchase) / active.
    """
    ctx = week_context(context)
    with source_db.connect() as conn:
        prices = category_prices(conn)

    def history():
        with source_db.connect() as conn:
            return customer_history(conn, ctx.week_start, ctx.week_end)

    # The history query scans all of the customers' past on the database; pandas enriches the week meanwhile.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="customer_history") as pool:
        pending = pool.submit(history)
        df = transform_week(validated_transactions, pending.result, prices, ctx)
    stale_days = (ctx.week_end.date() - last_rate_date()).days - 1
    if len(df) and stale_days > STALE_RATES_DAYS:
        context.log.warning(
            f"ECB rates in {rates_file()} end on {last_rate_date()}, {stale_days} days before the week's end: "
            "the last published rate is used (see fx_rate_date). Set ECB_RATES_FILE to a fresh eurofxref-hist.zip.")
    return dg.Output(df, metadata={
        "dagster/row_count": len(df),
        "amount_usd_total": float(df["amount_usd"].sum()),
        "fx_source": FX_SOURCE,
        "fx_latest_rate_date": str(df["fx_rate_date"].max().date()) if len(df) else "",
        "segments": dg.MetadataValue.json(df["transaction_size"].value_counts().to_dict()),
        "customer_lifecycle": dg.MetadataValue.json(df["customer_lifecycle"].value_counts().to_dict()),
    })
