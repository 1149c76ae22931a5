"""Pandera models of every dataset: what each column means, its type and its constraints."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

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
    # Converted once, by validation (the ceiling and the anomaly rules compare USD), and carried from there.
    amount_usd: Series[float] = pa.Field(
        gt=0, description="Amount in USD at the ECB reference rate of the transaction's UTC date.")
    fx_rate: Series[float] = pa.Field(gt=0, description="USD per unit of the currency used for amount_usd.")
    fx_rate_date: Series[pd.Timestamp] = pa.Field(
        description="Publication date of the ECB rate used (the last business day on or before the transaction).")


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
        isin=TRANSACTION_SIZES, description="By amount_usd: small (< $50), medium ($50-200), large (> $200).")
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
    loaded: Series[bool] = pa.Field(description="This attempt's rows went on to the warehouse: no blocking check "
                                    "stopped the week. False: weekly_transactions keeps an earlier run's rows.")
    load_status: Series[str] = pa.Field(description="'loaded', or 'blocked: <checks>' (e.g. 'blocked: "
                                        "quarantine_rate') when a blocking check stopped this attempt.")
    run_id: Series[str] = pa.Field(description="The Dagster run of this attempt (the run that loaded the week's "
                                   "tables when loaded).")

    class Config:
        strict = True
        coerce = True


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
        unique=True, description="The person's id (customer_identity_map): one profile per real customer, whatever "
        "ids the CRM, the ERP, the events and the database know them by.")
    email_hash: Series[str] = pa.Field(
        nullable=True, description="HMAC-SHA256 of the normalised email under PII_HASH_KEY (never the email).")
    country: Series[str] = pa.Field(
        nullable=True, description="Country (ISO 3166 alpha-2), from the CRM first, then the ERP, then the database; missing when "
        "no source has one (never imputed here: the marts count it as 'unknown').")
    segment: Series[str] = pa.Field(nullable=True, description="Segment (consumer, smb, enterprise); missing when no "
                                    "source has one (the marts count it as 'unknown').")
    subscription_tier: Series[str] = pa.Field(description="The CRM's subscription tier ('unknown' when no source has one).")
    lifetime_value: Series[float] = pa.Field(
        ge=0, description="Lifetime value in USD from the CRM, else the carried history of transactions, else median-imputed; never capped (an outlier is listed in outlier_fields).")
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
    outlier_fields: Series[str] = pa.Field(description="Fields whose value is above the week's 99th percentile "
                                           "(';'-joined, '' for none): flagged and kept true, never capped; only "
                                           "the feature_* inputs are capped.")
    value_tier_source: Series[str] = pa.Field(
        isin=["crm", "transactions", "imputed"], description="Where lifetime_value (and value_tier) came from: the "
        "CRM, else the carried history of the customer's transactions (USD), else the week's median (imputed).")
    status_source: Series[str] = pa.Field(
        isin=["crm", "events", "transactions", "signup"], description="Whose date the status reads: the latest of "
        "the CRM's last activity, the last event and the last purchase; the signup date when none is known.")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")


PROFILE_REQUIRED = [name for name, column in UnifiedCustomerProfiles.to_schema().columns.items()
                    if not column.nullable]


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


# --- the analysts' star schema and marts ------------------------------------------------------------------------

class ProductSnapshots(pa.DataFrameModel):
    """The product catalogue as extracted in a week: what the product dimension versions."""

    product_id: Series[str] = pa.Field(unique=True, description="The source's product id, trimmed.")
    name: Series[str] = pa.Field(nullable=True, description="The product's name.")
    category: Series[str] = pa.Field(nullable=True, description="The product's category.")
    price: Series[float] = pa.Field(nullable=True, description="Catalogue price (in the catalogue's currency).")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week it was extracted in.")

    class Config:
        strict = True
        coerce = True


class DimDate(pa.DataFrameModel):
    """One row per calendar day (UTC), added a week at a time as weeks are loaded."""

    date_key: Series[int] = pa.Field(unique=True, description="yyyymmdd: the fact tables' key to the day.")
    date: Series[pd.Timestamp] = pa.Field(description="The day (midnight, UTC wall time).")
    year: Series[int] = pa.Field(description="Calendar year.")
    quarter: Series[int] = pa.Field(ge=1, le=4, description="Calendar quarter, 1-4.")
    month: Series[int] = pa.Field(ge=1, le=12, description="Month, 1-12.")
    month_name: Series[str] = pa.Field(description="Month name (January...).")
    day_of_month: Series[int] = pa.Field(ge=1, le=31, description="Day of the month.")
    day_of_week: Series[int] = pa.Field(ge=1, le=7, description="ISO day of the week: Monday 1 ... Sunday 7.")
    day_name: Series[str] = pa.Field(description="Day name (Monday...).")
    is_weekend: Series[bool] = pa.Field(description="Saturday or Sunday.")
    iso_year: Series[int] = pa.Field(description="ISO 8601 week-numbering year.")
    iso_week: Series[int] = pa.Field(ge=1, le=53, description="ISO 8601 week number.")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday of the day's week: the pipeline's partition.")

    class Config:
        strict = True
        coerce = True


class FactTransactions(pa.DataFrameModel):
    """One row per loaded transaction, keyed to the dimension rows valid at its time."""

    transaction_id: Series[str] = pa.Field(unique=True, description="Degenerate key: the source's transaction id.")
    customer_key: Series[str] = pa.Field(description="dim_customers.customer_key of the version valid at the time.")
    product_key: Series[str] = pa.Field(description="dim_products.product_key of the version valid at the time.")
    date_key: Series[int] = pa.Field(description="dim_date.date_key of the transaction's UTC day.")
    customer_id: Series[str] = pa.Field(description="The person's id (customer_identity_map), as dim_customers "
                                        "keys it: count people by it.")
    product_id: Series[str] = pa.Field(description="The source's product id.")
    timestamp: Series[UTC_TS] = pa.Field(description="When the transaction completed (UTC).")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")
    amount: Series[float] = pa.Field(gt=0, description="Amount in the transaction's currency.")
    currency: Series[str] = pa.Field(description="ISO 4217 code of the amount.")
    amount_usd: Series[float] = pa.Field(gt=0, description="Amount in USD at the ECB rate of the transaction's day.")
    fx_rate: Series[float] = pa.Field(gt=0, description="USD per unit of the currency used for amount_usd.")
    fx_rate_date: Series[pd.Timestamp] = pa.Field(description="Publication date of the ECB rate used.")
    is_anomaly: Series[bool] = pa.Field(description="A statistical rule flagged the row (validation).")
    anomaly_flags: Series[str] = pa.Field(description="The anomaly codes, ';'-separated ('' if none).")

    class Config:
        strict = True
        coerce = True


class FactTransactionsQuarantine(pa.DataFrameModel):
    """Loaded transactions whose keys do not resolve to exactly one dimension row, with the reason."""

    transaction_id: Series[str] = pa.Field(description="The source's transaction id.")
    customer_id: Series[str] = pa.Field(nullable=True, description="The person's id, or the shop's id (trimmed) "
                                        "when the week's identity does not know it.")
    product_id: Series[str] = pa.Field(nullable=True, description="The source's product id.")
    timestamp: Series[UTC_TS] = pa.Field(description="When the transaction completed (UTC).")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")
    amount_usd: Series[float] = pa.Field(nullable=True, description="Amount in USD.")
    reason_codes: Series[str] = pa.Field(str_length={"min_value": 1}, description=(
        "Why: NO_CUSTOMER_VERSION, NO_PRODUCT_VERSION, NO_DATE, or AMBIGUOUS_* when a key matched several rows."))

    class Config:
        strict = True
        coerce = True


class MartWeeklySales(pa.DataFrameModel):
    """Weekly sales per product category, customer country and customer segment (USD)."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week.")
    category: Series[str] = pa.Field(description="Product category at the time ('unknown' imputed for none).")
    country: Series[str] = pa.Field(description="Customer country at the time ('unknown' imputed for none).")
    segment: Series[str] = pa.Field(description="Customer segment at the time ('unknown' imputed for none).")
    revenue_usd: Series[float] = pa.Field(ge=0, description="Sum of amount_usd.")
    orders: Series[int] = pa.Field(ge=1, description="Transactions.")
    customers: Series[int] = pa.Field(ge=1, description="Distinct customers.")
    avg_order_value_usd: Series[float] = pa.Field(ge=0, description="revenue_usd / orders.")
    previous_revenue_usd: Series[float] = pa.Field(nullable=True, description="The group's revenue the week before.")
    revenue_wow_change_pct: Series[float] = pa.Field(
        nullable=True, description="Change against the week before, in percent (null without revenue then).")

    class Config:
        strict = True
        coerce = True


class MartChurnRetention(pa.DataFrameModel):
    """Per week, customer segment, value tier and tenure band: every customer who has bought by the week's end,
    by status at the week's end (from the last purchase), and how many bought this week for the first time or
    again."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week.")
    segment: Series[str] = pa.Field(description="Customer segment ('unknown' imputed for none).")
    value_tier: Series[str] = pa.Field(description="Platinum / Gold / Silver / Bronze.")
    tenure_band: Series[str] = pa.Field(description="Since the first purchase, at the week's end: new (< 90 days), "
                                        "established (90-365), loyal (> 365).")
    customers: Series[int] = pa.Field(ge=1, description="Customers who have bought by the week's end.")
    active: Series[int] = pa.Field(ge=0, description="Last purchase less than 7 days before the week's end.")
    at_risk: Series[int] = pa.Field(ge=0, description="Last purchase 7-30 days before the week's end.")
    churned: Series[int] = pa.Field(ge=0, description="Last purchase more than 30 days before the week's end.")
    churn_rate: Series[float] = pa.Field(ge=0, le=1, description="churned / customers.")
    new_customers: Series[int] = pa.Field(ge=0, description="First purchase in this week.")
    returning_customers: Series[int] = pa.Field(ge=0, description="Bought this week, and had bought before it.")

    class Config:
        strict = True
        coerce = True


class MartCohortRetention(pa.DataFrameModel):
    """Per week: for each weekly cohort (customers by the week of their first purchase), how many bought."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week measured.")
    cohort_week: Series[pd.Timestamp] = pa.Field(description="Monday of the week of the cohort's first purchase.")
    weeks_since_first_purchase: Series[int] = pa.Field(ge=0, description="week_start - cohort_week, in weeks.")
    cohort_size: Series[int] = pa.Field(ge=1, description="Customers whose first purchase was in cohort_week.")
    retained: Series[int] = pa.Field(ge=0, description="Of them, those who bought in week_start's week.")
    retention_rate: Series[float] = pa.Field(ge=0, le=1, description="retained / cohort_size.")

    class Config:
        strict = True
        coerce = True


class ErpCustomers(pa.DataFrameModel):
    """The week's ERP records, standardised; email and phone only as keyed hashes."""

    customer_id: Series[str] = pa.Field(unique=True, description="The ERP's customer id, standardised.")
    email_hash: Series[str] = pa.Field(nullable=True, description="HMAC-SHA256 of the validated, lower-cased email.")
    phone_hash: Series[str] = pa.Field(nullable=True, description="HMAC-SHA256 of the phone's digits.")
    country: Series[str] = pa.Field(nullable=True, description="The country the ERP records.")
    updated_at: Series[UTC_TS] = pa.Field(description="When the ERP last modified the record (UTC).")
    source: Series[str] = pa.Field(isin=["erp"], description="Always 'erp'.")

    class Config:
        strict = True
        coerce = True


class CustomerIdentityMap(pa.DataFrameModel):
    """Which source records are one real customer (a person): every record of the CRM, the ERP and the database
    known as of the week, carried from week to week. A person keeps its id for good; persons merged into
    another are listed in `identity_merges`."""

    customer_id: Series[str] = pa.Field(description="The person's id: given once, by its first best record "
                                        "(CRM before ERP before database, then the most recent; an ERP id as "
                                        "'erp:<id>'), and kept for good. Profiles, dim_customers, the facts and "
                                        "the marts are keyed by it.")
    source: Series[str] = pa.Field(isin=["crm", "erp", "database"], description="The record's source.")
    source_customer_id: Series[str] = pa.Field(description="The record's id in its source (trimmed; case kept).")
    matched_on: Series[str] = pa.Field(isin=["email", "phone", "id", "self"], description=(
        "What links the record to the others of its person (the keyed email hash first); 'self' alone."))
    is_primary: Series[bool] = pa.Field(description="The person's best record (CRM before ERP before database, "
                                        "then the most recent).")
    email_hash: Series[str] = pa.Field(nullable=True, description="Keyed HMAC-SHA256 of the record's email "
                                       "(PII_HASH_KEY), what later records are matched on; never the email.")
    phone_hash: Series[str] = pa.Field(nullable=True, description="Keyed HMAC-SHA256 of the phone's digits.")
    updated_at: Series[UTC_TS] = pa.Field(nullable=True,
                                                      description="When the source last changed the record.")
    first_seen_week: Series[pd.Timestamp] = pa.Field(description="The first week the record was seen in.")
    last_seen_week: Series[pd.Timestamp] = pa.Field(description="The last week the record was seen in.")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition): the "
                                                "identity as of that week's end.")

    class Config:
        strict = True
        coerce = True


class IdentityMerges(pa.DataFrameModel):
    """Persons that a week's records showed to be one: the retired id and the id it merged into."""

    retired_id: Series[str] = pa.Field(description="The person's id until the week; no table keeps it after.")
    surviving_id: Series[str] = pa.Field(description="The id it merged into: the person of the best record.")
    matched_on: Series[str] = pa.Field(description="The kinds of link ('email', 'phone', 'id', joined by '+') "
                                       "that joined them.")
    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week of the merge.")

    class Config:
        strict = True
        coerce = True


class PipelineErrorLog(pa.DataFrameModel):
    """What each step of a week rejected, flagged or lost: one row per step and reason."""

    week_start: Series[pd.Timestamp] = pa.Field(description="Monday 00:00 UTC of the week (the partition).")
    step: Series[str] = pa.Field(description="The asset whose step recorded it.")
    severity: Series[str] = pa.Field(isin=["ERROR", "WARNING"], description="ERROR: rows kept out of the "
                                     "warehouse tables (quarantined); WARNING: kept, flagged or repaired.")
    reason: Series[str] = pa.Field(description="The reason code (e.g. MISSING_AMOUNT, NO_PRODUCT_VERSION).")
    record_count: Series[int] = pa.Field(ge=1, description="How many records.")

    class Config:
        strict = True
        coerce = True
