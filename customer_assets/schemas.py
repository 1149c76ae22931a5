"""Pandera models of every dataset, turned into Dagster types for the assets' outputs."""

from __future__ import annotations

import warnings

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type
from pandera.typing import Series

from customer_assets.io_managers.frames import frame_batches_type, stored_frame_type

UTC_TS = pd.DatetimeTZDtype(tz="UTC")

TRANSACTION_SIZES = ["small", "medium", "large"]
CUSTOMER_LIFECYCLES = ["new", "active", "dormant"]


class _TransactionColumns(pa.DataFrameModel):
    """A week's transactions joined to customers and products. Never email, phone or address."""

    transaction_id: Series[str] = pa.Field(nullable=True, description="The source's transaction id, trimmed.")
    customer_id: Series[str] = pa.Field(
        nullable=True, description="The source's customer id, trimmed (pseudonymous: no name, email, phone or address).")
    country: Series[str] = pa.Field(nullable=True, description="The customer's country (ISO 3166 alpha-2).")
    segment: Series[str] = pa.Field(
        nullable=True, description="The customer's segment (consumer, smb, enterprise).")
    amount: Series[float] = pa.Field(nullable=True, description="Amount in the transaction's currency.")
    currency: Series[str] = pa.Field(nullable=True, description="ISO 4217 code of the amount.")
    timestamp: Series[UTC_TS] = pa.Field(nullable=True, description="When the transaction completed (UTC).")
    product_id: Series[str] = pa.Field(nullable=True, description="The source's product id, trimmed.")
    product_name: Series[str] = pa.Field(nullable=True, description="The product's name in the catalogue.")
    category: Series[str] = pa.Field(nullable=True, description="The product's category.")
    customer_created_at: Series[UTC_TS] = pa.Field(
        nullable=True, description="When the customer was created (UTC).")
    customer_exists: Series[bool] = pa.Field(description="The customer id is in the customers table.")
    product_exists: Series[bool] = pa.Field(description="The product id is in the products table.")

    class Config:
        strict = True
        coerce = True


class RawTransactions(_TransactionColumns):
    """The week's completed transactions as extracted: ids trimmed, undecodable text marked."""

    invalid_encoding: Series[str] = pa.Field(
        nullable=True, description="Columns whose bytes were not UTF-8 (';'-separated; the row is quarantined "
        "INVALID_ENCODING and those values hold U+FFFD replacements); null where the row decoded.")


class ValidatedTransactions(_TransactionColumns):
    """Rows that passed every hard rule; statistical anomalies stay, flagged."""

    transaction_id: Series[str] = pa.Field(unique=True)
    customer_id: Series[str]
    amount: Series[float] = pa.Field(gt=0)
    currency: Series[str] = pa.Field(str_length={"min_value": 3, "max_value": 3})
    timestamp: Series[UTC_TS]
    is_anomaly: Series[bool] = pa.Field(
        description="A statistical rule flagged the row (it is loaded all the same).")
    anomaly_flags: Series[str] = pa.Field(
        description="The anomaly codes that flagged the row, ';'-separated ('' if none).")


class QuarantinedTransactions(RawTransactions):
    """Rows that failed at least one hard rule, with every reason code (``;``-separated)."""

    reason_codes: Series[str] = pa.Field(str_length={"min_value": 1})
    primary_reason: Series[str]


class TransactionAnomalies(pa.DataFrameModel):
    """Validated rows flagged by a statistical rule (they are loaded, and listed here for review)."""

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

    amount_usd: Series[float] = pa.Field(
        gt=0, description="Amount in USD at the ECB reference rate of the transaction's UTC date.")
    fx_rate: Series[float] = pa.Field(gt=0, description="USD per unit of the currency used for amount_usd.")
    fx_rate_date: Series[pd.Timestamp] = pa.Field(
        description="Publication date of the ECB rate used (the last business day on or before the transaction).")
    fx_source: Series[str] = pa.Field(description="Where the rate comes from.")
    day_of_week: Series[str] = pa.Field(description="Day of the week of the timestamp (UTC).")
    hour_of_day: Series[int] = pa.Field(ge=0, le=23, description="Hour of the timestamp (UTC), 0-23.")
    is_weekend: Series[bool] = pa.Field(description="Saturday or Sunday (UTC).")
    week_number: Series[int] = pa.Field(ge=1, le=53, description="ISO week number.")
    month: Series[int] = pa.Field(ge=1, le=12, description="Month, 1-12.")
    quarter: Series[int] = pa.Field(ge=1, le=4, description="Quarter, 1-4.")
    customer_lifetime_value: Series[float] = pa.Field(
        gt=0, description="The customer's validated spend in USD over all weeks to this week's end.")
    customer_transaction_count: Series[int] = pa.Field(
        ge=1, description="The customer's validated transactions over all weeks to this week's end.")
    days_since_first_purchase: Series[int] = pa.Field(
        ge=0, description="Days from the customer's first purchase to the week's end.")
    product_popularity_rank: Series[int] = pa.Field(
        ge=1, description="The product's rank by transactions this week (1 = most).")
    category_avg_price: Series[float] = pa.Field(
        ge=0, description="Average catalogue price of the product's category.")
    transaction_size: Series[str] = pa.Field(
        isin=TRANSACTION_SIZES, description="small / medium / large against the category's average price.")
    customer_lifecycle: Series[str] = pa.Field(
        isin=CUSTOMER_LIFECYCLES, description="new / active / dormant from the customer's purchase history.")
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the transaction's week (the partition).")


class DataQualityMetrics(pa.DataFrameModel):
    """One row per week: the history of data quality that the UI and dashboards plot."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")
    total_records: Series[int] = pa.Field(ge=0, description="Rows extracted.")
    passed_records: Series[int] = pa.Field(ge=0, description="Rows that passed every hard rule.")
    quarantined_records: Series[int] = pa.Field(ge=0, description="Rows quarantined by a hard rule.")
    flagged_records: Series[int] = pa.Field(ge=0, description="Validated rows flagged by a statistical rule.")
    quality_score: Series[float] = pa.Field(
        ge=0, le=100, description="Share of rows passing every hard rule, in percent.")
    completeness_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the completeness rules (fraction).")
    validity_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the validity rules (fraction).")
    consistency_pass_rate: Series[float] = pa.Field(
        ge=0, le=1, description="Share of rows passing the consistency rules (fraction).")
    run_seconds: Series[float] = pa.Field(ge=0, description="Seconds the validation took.")
    computed_at: Series[UTC_TS] = pa.Field(description="When the row was computed (UTC).")

    class Config:
        strict = True
        coerce = True


def _holds_only_str(frame: object, columns: list[str]) -> bool:
    """True when each column is a pandas string column, or an object column of Python str (or missing) only."""
    return isinstance(frame, pd.DataFrame) and all(
        name in frame.columns and (
            isinstance(frame[name].dtype, pd.StringDtype)
            or (frame[name].dtype == object
                and pd.api.types.infer_dtype(frame[name], skipna=True) in ("string", "empty")))
        for name in columns)


def _shallow(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy that shares the data (Copy-on-Write): validating it "in place" never touches the output, and
    pandera's own deep copy (the size of the frame again, at every output) is not made."""
    return frame.copy(deep=False)


def _fast_schema(model: type[pa.DataFrameModel]):
    """The model's schema without its ``str`` dtype checks, and the names of those columns.

    Pandera checks a ``str`` column element by element in Python (``map(isinstance)``) after coercing it
    with ``astype(str)``: over a week of rows this costs seconds per output. When every ``str`` column
    already holds only str or missing values (what the assets produce), coercion changes nothing and the
    dtype check passes, so the same schema minus those dtype checks (nullability, uniqueness, lengths,
    allowed values, every other column unchanged) decides.

    It also checks the other dtypes as they are, without coercing first (a coercion of a timestamp column
    that already has its dtype still costs a ``to_datetime``): a frame that passes needs no coercion, and one
    whose dtypes only coerce to the model's fails here and is decided by the full check, which coerces.
    """
    schema = model.to_schema()
    str_columns = [name for name, column in schema.columns.items() if str(column.dtype) == "str"]
    fast = schema.update_columns({name: {"dtype": None, "coerce": False} for name in str_columns})
    fast.coerce = False
    return fast, str_columns


def _passes_fast_check(model: type[pa.DataFrameModel]):
    """A function telling whether a frame passes the cheap check; False means "ask pandera's full check"
    (which also reports the errors)."""
    fast, str_columns = _fast_schema(model)

    def passes(frame: object) -> bool:
        if not _holds_only_str(frame, str_columns):
            return False
        try:
            fast.validate(_shallow(frame), lazy=True, inplace=True)
            return True
        except (pa.errors.SchemaError, pa.errors.SchemaErrors):
            return False

    return passes


def frame_check(model: type[pa.DataFrameModel]):
    """A function that raises pandera's ``SchemaErrors`` (every failure, with examples) when a frame breaks
    ``model``; the cheap str check first, pandera's full check when that fails."""
    passes, full = _passes_fast_check(model), model.to_schema()

    def check(frame: pd.DataFrame) -> None:
        if not passes(frame):
            full.validate(frame, lazy=True)

    return check


def _dagster_pandera_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    with warnings.catch_warnings():
        # dagster-pandera is pinned with pandera in pyproject.toml; its beta notice says nothing more here.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return pandera_schema_to_dagster_type(model)


def frame_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    """The model as a Dagster type, with the same outcome as dagster-pandera's but a cheaper str check
    (see ``_fast_schema``). Anything the cheap check rejects goes through the full pandera check, which also
    reports the errors."""
    full, passes = _dagster_pandera_type(model), _passes_fast_check(model)

    def type_check(context, value: object) -> dg.TypeCheck:
        return dg.TypeCheck(success=True) if passes(value) else full.type_check(context, value)

    return dg.DagsterType(type_check_fn=type_check, name=full.unique_name, description=full.description,
                          metadata=full.metadata, typing_type=pd.DataFrame)


RawTransactionsType = frame_type(RawTransactions)
QuarantinedTransactionsType = frame_type(QuarantinedTransactions)
TransactionAnomaliesType = frame_type(TransactionAnomalies)
# The validated and transformed weeks are written batch by batch: each batch is checked against its model as it
# is written (the checks below), and the stored transformed file's columns and types before the warehouse load.
check_validated_transactions = frame_check(ValidatedTransactions)
check_transformed_transactions = frame_check(TransformedTransactions)
_TRANSFORMED_METADATA = _dagster_pandera_type(TransformedTransactions).metadata
TransformedTransactionsBatchesType = frame_batches_type("TransformedTransactionsBatches", _TRANSFORMED_METADATA)
ValidatedTransactionsBatchesType = frame_batches_type(
    "ValidatedTransactionsBatches", _dagster_pandera_type(ValidatedTransactions).metadata)
TransformedTransactionsFileType = stored_frame_type(
    "TransformedTransactionsFile", check_transformed_transactions, _TRANSFORMED_METADATA)
DataQualityMetricsType = frame_type(DataQualityMetrics)

RAW_COLUMNS: list[str] = list(RawTransactions.to_schema().columns)


class CrmCustomers(pa.DataFrameModel):
    """The week's CRM records, standardised; email and phone only as keyed hashes."""

    customer_id: Series[str] = pa.Field(unique=True)
    email_hash: Series[str] = pa.Field(nullable=True, str_length={"min_value": 64, "max_value": 64})
    phone_hash: Series[str] = pa.Field(nullable=True)
    signup_date: Series[UTC_TS] = pa.Field(nullable=True)
    last_activity_at: Series[UTC_TS] = pa.Field(nullable=True)
    subscription_tier: Series[str] = pa.Field(nullable=True)
    lifetime_value: Series[float] = pa.Field(nullable=True)
    support_ticket_count: Series[float] = pa.Field(nullable=True)
    updated_at: Series[UTC_TS] = pa.Field(nullable=True)
    source: Series[str] = pa.Field(isin=["crm"])

    class Config:
        strict = True


class CustomerEventAggregates(pa.DataFrameModel):
    """Per customer, the week's behavioural events."""

    customer_id: Series[str] = pa.Field(unique=True)
    page_views: Series[int] = pa.Field(ge=0)
    unique_features_used: Series[int] = pa.Field(ge=0)
    purchase_count: Series[int] = pa.Field(ge=0)
    purchase_amount: Series[float] = pa.Field(ge=0)
    support_interactions: Series[int] = pa.Field(ge=0)
    last_event_at: Series[UTC_TS]

    class Config:
        strict = True


class UnifiedCustomerProfiles(pa.DataFrameModel):
    """One profile per customer seen this week; required columns never null."""

    customer_id: Series[str] = pa.Field(
        unique=True, description="The customer's id, standardised (trimmed, upper-cased) across the CRM, the events and the database.")
    email_hash: Series[str] = pa.Field(
        nullable=True, description="HMAC-SHA256 of the normalised email under PII_HASH_KEY (never the email).")
    country: Series[str] = pa.Field(
        description="Country (ISO 3166 alpha-2), from the CRM first, then the database.")
    segment: Series[str] = pa.Field(description="Segment (consumer, smb, enterprise).")
    subscription_tier: Series[str] = pa.Field(description="The CRM's subscription tier ('unknown' when no source has one).")
    lifetime_value: Series[float] = pa.Field(
        ge=0, description="Lifetime value in USD from the CRM, else the database record (median-imputed when missing, capped at the 99th percentile).")
    support_ticket_count: Series[int] = pa.Field(ge=0, description="Support tickets in the CRM.")
    page_views: Series[int] = pa.Field(ge=0, description="Page views in the week's events.")
    unique_features_used: Series[int] = pa.Field(ge=0, description="Distinct features used in the week's events.")
    purchase_count: Series[int] = pa.Field(ge=0, description="Purchases in the week's events.")
    purchase_amount: Series[float] = pa.Field(ge=0, description="USD amount of the week's purchase events.")
    support_interactions: Series[int] = pa.Field(ge=0, description="Support chats in the week's events.")
    week_transaction_count: Series[int] = pa.Field(ge=0, description="Validated transactions in the week.")
    week_spend_usd: Series[float] = pa.Field(ge=0, description="USD spend of the week's validated transactions.")
    days_since_last_activity: Series[int] = pa.Field(
        ge=0, description="Days from the last activity (event, purchase or CRM) to the week's end.")
    status: Series[str] = pa.Field(
        isin=["active", "at-risk", "churned"], description="active (< 7 days since activity), at-risk (7-30) or churned (> 30).")
    value_tier: Series[str] = pa.Field(
        isin=["Platinum", "Gold", "Silver", "Bronze"], description="Platinum / Gold / Silver / Bronze by lifetime value.")
    engagement_score: Series[float] = pa.Field(
        ge=0, le=100, description="0-100: weighted, saturating combination of purchases, features, page views and support.")
    imputed_fields: Series[str] = pa.Field(
        description="Columns imputed for this profile (';'-separated, '' if none); transform_log.json says how.")
    in_crm: Series[bool] = pa.Field(description="The CRM had a record for the customer this week.")
    in_events: Series[bool] = pa.Field(description="The customer had events this week.")
    in_transactions: Series[bool] = pa.Field(description="The customer had validated transactions this week.")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")


def column_schema(model: type[pa.DataFrameModel]) -> dg.TableSchema:
    """The model's columns, types and descriptions as Dagster's table schema (for an asset's definition)."""
    return dg.TableSchema(columns=[dg.TableColumn(name=name, type=str(column.dtype), description=column.description)
                                   for name, column in model.to_schema().columns.items()])


PROFILE_REQUIRED = [name for name, column in UnifiedCustomerProfiles.to_schema().columns.items()
                    if not column.nullable]

CrmCustomersType = frame_type(CrmCustomers)
CustomerEventAggregatesType = frame_type(CustomerEventAggregates)
UnifiedCustomerProfilesType = frame_type(UnifiedCustomerProfiles)


class CustomerHistory(pa.DataFrameModel):
    """Running totals per customer and currency as of a week's end (validated rows of every week so far)."""

    customer_id: Series[str]
    currency: Series[str] = pa.Field(str_length={"min_value": 3, "max_value": 3})
    amount_milli: Series[int] = pa.Field(ge=0, description="Sum of amounts in thousandths of the currency unit.")
    transaction_count: Series[int] = pa.Field(ge=1)
    first_purchase_at: Series[UTC_TS]
    last_purchase_at: Series[UTC_TS]
    last_purchase_before_week: Series[UTC_TS] = pa.Field(nullable=True)
    week_start: Series[pd.Timestamp]

    class Config:
        strict = True
        unique = ["customer_id", "currency"]


CustomerHistoryType = frame_type(CustomerHistory)
