"""The analysts' star schema and marts: the product snapshots the product dimension versions, the
date dimension, the facts and their quarantine, and the weekly marts."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from customer_assets.schemas.transactions import UTC_TS


class ProductSnapshots(pa.DataFrameModel):
    """The product catalogue as extracted in a week: what the product dimension versions."""

    product_id: Series[str] = pa.Field(unique=True, description="The source's product id, trimmed.")
    name: Series[str] = pa.Field(nullable=True, description="The product's name.")
    category: Series[str] = pa.Field(nullable=True, description="The product's category.")
    price: Series[float] = pa.Field(
        nullable=True, description="Catalogue price (in the catalogue's currency)."
    )
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week it was extracted in."
    )

    class Config:
        strict = True
        coerce = True


class DimDate(pa.DataFrameModel):
    """One row per calendar day (UTC), added a week at a time as weeks are loaded."""

    date_key: Series[int] = pa.Field(
        unique=True, description="yyyymmdd: the fact tables' key to the day."
    )
    date: Series[pd.Timestamp] = pa.Field(description="The day (midnight, UTC wall time).")
    year: Series[int] = pa.Field(description="Calendar year.")
    quarter: Series[int] = pa.Field(ge=1, le=4, description="Calendar quarter, 1-4.")
    month: Series[int] = pa.Field(ge=1, le=12, description="Month, 1-12.")
    month_name: Series[str] = pa.Field(description="Month name (January...).")
    day_of_month: Series[int] = pa.Field(ge=1, le=31, description="Day of the month.")
    day_of_week: Series[int] = pa.Field(
        ge=1, le=7, description="ISO day of the week: Monday 1 ... Sunday 7."
    )
    day_name: Series[str] = pa.Field(description="Day name (Monday...).")
    is_weekend: Series[bool] = pa.Field(description="Saturday or Sunday.")
    iso_year: Series[int] = pa.Field(description="ISO 8601 week-numbering year.")
    iso_week: Series[int] = pa.Field(ge=1, le=53, description="ISO 8601 week number.")
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday of the day's week: the pipeline's partition."
    )

    class Config:
        strict = True
        coerce = True


class FactTransactions(pa.DataFrameModel):
    """One row per loaded transaction, keyed to the dimension rows valid at its time."""

    transaction_id: Series[str] = pa.Field(
        unique=True, description="Degenerate key: the source's transaction id."
    )
    customer_key: Series[str] = pa.Field(
        description="dim_customers.customer_key of the version valid at the time."
    )
    product_key: Series[str] = pa.Field(
        description="dim_products.product_key of the version valid at the time."
    )
    date_key: Series[int] = pa.Field(description="dim_date.date_key of the transaction's UTC day.")
    customer_id: Series[str] = pa.Field(
        description="The person's id (customer_identity_map), as dim_customers "
        "keys it: count people by it."
    )
    product_id: Series[str] = pa.Field(description="The source's product id.")
    timestamp: Series[UTC_TS] = pa.Field(description="When the transaction completed (UTC).")
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition)."
    )
    amount: Series[float] = pa.Field(gt=0, description="Amount in the transaction's currency.")
    currency: Series[str] = pa.Field(description="ISO 4217 code of the amount.")
    amount_usd: Series[float] = pa.Field(
        gt=0, description="Amount in USD at the ECB rate of the transaction's day."
    )
    fx_rate: Series[float] = pa.Field(
        gt=0, description="USD per unit of the currency used for amount_usd."
    )
    fx_rate_date: Series[pd.Timestamp] = pa.Field(
        description="Publication date of the ECB rate used."
    )
    is_anomaly: Series[bool] = pa.Field(
        description="A statistical rule flagged the row (validation)."
    )
    anomaly_flags: Series[str] = pa.Field(
        description="The anomaly codes, ';'-separated ('' if none)."
    )

    class Config:
        strict = True
        coerce = True


class FactTransactionsQuarantine(pa.DataFrameModel):
    """Loaded transactions whose keys do not resolve to exactly one dimension row, with the
    reason."""

    transaction_id: Series[str] = pa.Field(description="The source's transaction id.")
    customer_id: Series[str] = pa.Field(
        nullable=True,
        description="The person's id, or the shop's id (trimmed) "
        "when the week's identity does not know it.",
    )
    product_id: Series[str] = pa.Field(nullable=True, description="The source's product id.")
    timestamp: Series[UTC_TS] = pa.Field(description="When the transaction completed (UTC).")
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition)."
    )
    amount_usd: Series[float] = pa.Field(nullable=True, description="Amount in USD.")
    reason_codes: Series[str] = pa.Field(
        str_length={"min_value": 1},
        description=(
            "Why: NO_CUSTOMER_VERSION, NO_PRODUCT_VERSION, NO_DATE, or AMBIGUOUS_* when a key matched several rows."
        ),
    )

    class Config:
        strict = True
        coerce = True


class MartWeeklySales(pa.DataFrameModel):
    """Weekly sales per product category, customer country and customer segment (USD)."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week.")
    category: Series[str] = pa.Field(
        description="Product category at the time ('unknown' imputed for none)."
    )
    country: Series[str] = pa.Field(
        description="Customer country at the time ('unknown' imputed for none)."
    )
    segment: Series[str] = pa.Field(
        description="Customer segment at the time ('unknown' imputed for none)."
    )
    revenue_usd: Series[float] = pa.Field(ge=0, description="Sum of amount_usd.")
    orders: Series[int] = pa.Field(ge=1, description="Transactions.")
    customers: Series[int] = pa.Field(ge=1, description="Distinct customers.")
    avg_order_value_usd: Series[float] = pa.Field(ge=0, description="revenue_usd / orders.")
    previous_revenue_usd: Series[float] = pa.Field(
        nullable=True, description="The group's revenue the week before."
    )
    revenue_wow_change_pct: Series[float] = pa.Field(
        nullable=True,
        description="Change against the week before, in percent (null without revenue then).",
    )

    class Config:
        strict = True
        coerce = True


class MartChurnRetention(pa.DataFrameModel):
    """Per week, customer segment, value tier and tenure band: every customer who has bought by the
    week's end, by status at the week's end (from the last purchase), and how many bought this week
    for the first time or again."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week.")
    segment: Series[str] = pa.Field(description="Customer segment ('unknown' imputed for none).")
    value_tier: Series[str] = pa.Field(description="Platinum / Gold / Silver / Bronze.")
    tenure_band: Series[str] = pa.Field(
        description="Since the first purchase, at the week's end: new (< 90 days), "
        "established (90-365), loyal (> 365)."
    )
    customers: Series[int] = pa.Field(
        ge=1, description="Customers who have bought by the week's end."
    )
    active: Series[int] = pa.Field(
        ge=0, description="Last purchase less than 7 days before the week's end."
    )
    at_risk: Series[int] = pa.Field(
        ge=0, description="Last purchase 7-30 days before the week's end."
    )
    churned: Series[int] = pa.Field(
        ge=0, description="Last purchase more than 30 days before the week's end."
    )
    churn_rate: Series[float] = pa.Field(ge=0, le=1, description="churned / customers.")
    new_customers: Series[int] = pa.Field(ge=0, description="First purchase in this week.")
    returning_customers: Series[int] = pa.Field(
        ge=0, description="Bought this week, and had bought before it."
    )

    class Config:
        strict = True
        coerce = True


class MartCohortRetention(pa.DataFrameModel):
    """Per week: for each weekly cohort (customers by the week of their first purchase), how many
    bought."""

    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week measured."
    )
    cohort_week: Series[pd.Timestamp] = pa.Field(
        description="Monday of the week of the cohort's first purchase."
    )
    weeks_since_first_purchase: Series[int] = pa.Field(
        ge=0, description="week_start - cohort_week, in weeks."
    )
    cohort_size: Series[int] = pa.Field(
        ge=1, description="Customers whose first purchase was in cohort_week."
    )
    retained: Series[int] = pa.Field(
        ge=0, description="Of them, those who bought in week_start's week."
    )
    retention_rate: Series[float] = pa.Field(ge=0, le=1, description="retained / cohort_size.")

    class Config:
        strict = True
        coerce = True
