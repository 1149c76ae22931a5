"""The week's transactions at each stage (raw, validated, quarantined, flagged, enriched), the
customers' carried totals, and what each week's run measured (data quality, the error log)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UTC_TS = pd.DatetimeTZDtype(tz="UTC")
TRANSACTION_SIZES = ["small", "medium", "large"]
CUSTOMER_LIFECYCLES = ["new", "active", "dormant"]


class _TransactionColumns(pa.DataFrameModel):
    """A week's transactions joined to customers and products. Never email, phone or address."""

    transaction_id: Series[str] = pa.Field(
        nullable=True, description="The source's transaction id, trimmed."
    )
    customer_id: Series[str] = pa.Field(
        nullable=True,
        description="The source's customer id, trimmed (pseudonymous: no name, email, phone or address).",
    )
    country: Series[str] = pa.Field(
        nullable=True, description="The customer's country (ISO 3166 alpha-2)."
    )
    segment: Series[str] = pa.Field(
        nullable=True, description="The customer's segment (consumer, smb, enterprise)."
    )
    amount: Series[float] = pa.Field(
        nullable=True, description="Amount in the transaction's currency."
    )
    currency: Series[str] = pa.Field(nullable=True, description="ISO 4217 code of the amount.")
    timestamp: Series[UTC_TS] = pa.Field(
        nullable=True, description="When the transaction completed (UTC)."
    )
    product_id: Series[str] = pa.Field(
        nullable=True, description="The source's product id, trimmed."
    )
    product_name: Series[str] = pa.Field(
        nullable=True, description="The product's name in the catalogue."
    )
    category: Series[str] = pa.Field(nullable=True, description="The product's category.")
    customer_created_at: Series[UTC_TS] = pa.Field(
        nullable=True, description="When the customer was created (UTC)."
    )
    customer_exists: Series[bool] = pa.Field(
        description="The customer id is in the customers table."
    )
    product_exists: Series[bool] = pa.Field(description="The product id is in the products table.")

    class Config:
        strict = True
        coerce = True


class RawTransactions(_TransactionColumns):
    """The week's completed transactions as extracted: ids trimmed, undecodable text marked."""

    invalid_encoding: Series[str] = pa.Field(
        nullable=True,
        description="Columns whose bytes were not UTF-8 (';'-separated; the row is quarantined "
        "INVALID_ENCODING and those values hold U+FFFD replacements); null where the row decoded.",
    )


class ValidatedTransactions(_TransactionColumns):
    """Rows that passed every hard rule; statistical anomalies stay, flagged."""

    transaction_id: Series[str] = pa.Field(unique=True)
    customer_id: Series[str]
    amount: Series[float] = pa.Field(gt=0)
    currency: Series[str] = pa.Field(str_length={"min_value": 3, "max_value": 3})
    timestamp: Series[UTC_TS]
    is_anomaly: Series[bool] = pa.Field(
        description="A statistical rule flagged the row (it is loaded all the same)."
    )
    anomaly_flags: Series[str] = pa.Field(
        description="The anomaly codes that flagged the row, ';'-separated ('' if none)."
    )
    # Converted once, by validation (the ceiling and the anomaly rules compare USD), and carried
    # from there.
    amount_usd: Series[float] = pa.Field(
        gt=0, description="Amount in USD at the ECB reference rate of the transaction's UTC date."
    )
    fx_rate: Series[float] = pa.Field(
        gt=0, description="USD per unit of the currency used for amount_usd."
    )
    fx_rate_date: Series[pd.Timestamp] = pa.Field(
        description="Publication date of the ECB rate used (the last business day on or before the transaction)."
    )


class QuarantinedTransactions(RawTransactions):
    """Rows that failed at least one hard rule, with every reason code (``;``-separated)."""

    reason_codes: Series[str] = pa.Field(str_length={"min_value": 1})
    primary_reason: Series[str]


class TransactionAnomalies(pa.DataFrameModel):
    """Validated rows flagged by a statistical rule (they are loaded, and listed here for
    review)."""

    transaction_id: Series[str]
    customer_id: Series[str]
    product_id: Series[str] = pa.Field(nullable=True)
    amount: Series[float]
    currency: Series[str]
    amount_usd: Series[float]
    timestamp: Series[UTC_TS]
    anomaly_flags: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = True
        coerce = True


class TransformedTransactions(ValidatedTransactions):
    """Validated transactions enriched for analytics; computed columns are never null."""

    fx_source: Series[str] = pa.Field(description="Where the rate comes from.")
    day_of_week: Series[str] = pa.Field(description="Day of the week of the timestamp (UTC).")
    hour_of_day: Series[int] = pa.Field(
        ge=0, le=23, description="Hour of the timestamp (UTC), 0-23."
    )
    is_weekend: Series[bool] = pa.Field(description="Saturday or Sunday (UTC).")
    week_number: Series[int] = pa.Field(ge=1, le=53, description="ISO week number.")
    month: Series[int] = pa.Field(ge=1, le=12, description="Month, 1-12.")
    quarter: Series[int] = pa.Field(ge=1, le=4, description="Quarter, 1-4.")
    customer_lifetime_value: Series[float] = pa.Field(
        gt=0, description="The customer's validated spend in USD over all weeks to this week's end."
    )
    customer_transaction_count: Series[int] = pa.Field(
        ge=1, description="The customer's validated transactions over all weeks to this week's end."
    )
    days_since_first_purchase: Series[int] = pa.Field(
        ge=0, description="Days from the customer's first purchase to the week's end."
    )
    product_popularity_rank: Series[int] = pa.Field(
        ge=1, description="The product's rank by transactions this week (1 = most)."
    )
    category_avg_price: Series[float] = pa.Field(
        ge=0, description="Average catalogue price of the product's category."
    )
    transaction_size: Series[str] = pa.Field(
        isin=TRANSACTION_SIZES,
        description="By amount_usd: small (< $50), medium ($50-200), large (> $200).",
    )
    customer_lifecycle: Series[str] = pa.Field(
        isin=CUSTOMER_LIFECYCLES,
        description="new / active / dormant from the customer's purchase history.",
    )
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the transaction's week (the partition)."
    )


class CustomerHistory(pa.DataFrameModel):
    """Running totals per customer and currency as of a week's end (validated rows of every week so
    far)."""

    customer_id: Series[str]
    currency: Series[str] = pa.Field(str_length={"min_value": 3, "max_value": 3})
    amount_milli: Series[int] = pa.Field(
        ge=0, description="Sum of amounts in thousandths of the currency unit."
    )
    transaction_count: Series[int] = pa.Field(ge=1)
    first_purchase_at: Series[UTC_TS]
    last_purchase_at: Series[UTC_TS]
    last_purchase_before_week: Series[UTC_TS] = pa.Field(nullable=True)
    week_start: Series[pd.Timestamp]

    class Config:
        strict = True
        unique = ["customer_id", "currency"]


class DataQualityMetrics(pa.DataFrameModel):
    """One row per week: the history of data quality that the UI and dashboards plot."""

    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition)."
    )
    total_records: Series[int] = pa.Field(ge=0, description="Rows extracted.")
    passed_records: Series[int] = pa.Field(ge=0, description="Rows that passed every hard rule.")
    quarantined_records: Series[int] = pa.Field(
        ge=0, description="Rows quarantined by a hard rule."
    )
    flagged_records: Series[int] = pa.Field(
        ge=0, description="Validated rows flagged by a statistical rule."
    )
    quality_score: Series[float] = pa.Field(
        ge=0, le=100, description="Share of rows passing every hard rule, in percent."
    )
    completeness_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the completeness rules (fraction)."
    )
    validity_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the validity rules (fraction)."
    )
    consistency_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the consistency rules (fraction)."
    )
    run_seconds: Series[float] = pa.Field(ge=0, description="Seconds the validation took.")
    computed_at: Series[UTC_TS] = pa.Field(description="When the row was computed (UTC).")
    loaded: Series[bool] = pa.Field(
        description="This attempt's rows went on to the warehouse: no blocking check "
        "stopped the week. False: weekly_transactions keeps an earlier run's rows."
    )
    load_status: Series[str] = pa.Field(
        description="'loaded', or 'blocked: <checks>' (e.g. 'blocked: "
        "quarantine_rate') when a blocking check stopped this attempt."
    )
    run_id: Series[str] = pa.Field(
        description="The Dagster run of this attempt (the run that loaded the week's "
        "tables when loaded)."
    )

    class Config:
        strict = True
        coerce = True


class PipelineErrorLog(pa.DataFrameModel):
    """What each step of a week rejected, flagged or lost: one row per step and reason."""

    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition)."
    )
    step: Series[str] = pa.Field(description="The asset whose step recorded it.")
    severity: Series[str] = pa.Field(
        isin=["ERROR", "WARNING"],
        description="ERROR: rows kept out of the "
        "warehouse tables (quarantined); WARNING: kept, flagged or repaired.",
    )
    reason: Series[str] = pa.Field(
        description="The reason code (e.g. MISSING_AMOUNT, NO_PRODUCT_VERSION)."
    )
    record_count: Series[int] = pa.Field(ge=1, description="How many records.")

    class Config:
        strict = True
        coerce = True
