"""The customers as the sources know them (the CRM, the ERP, the events), the carried identity that
makes them persons, and the week's unified profile of each person."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from customer_assets.logic.profile_rules import STATUSES, TIER_NAMES
from customer_assets.schemas.transactions import UTC_TS


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


class ErpCustomers(pa.DataFrameModel):
    """The week's ERP records, standardised; email and phone only as keyed hashes."""

    customer_id: Series[str] = pa.Field(
        unique=True, description="The ERP's customer id, standardised."
    )
    email_hash: Series[str] = pa.Field(
        nullable=True, description="HMAC-SHA256 of the validated, lower-cased email."
    )
    phone_hash: Series[str] = pa.Field(
        nullable=True, description="HMAC-SHA256 of the phone's digits."
    )
    country: Series[str] = pa.Field(nullable=True, description="The country the ERP records.")
    updated_at: Series[UTC_TS] = pa.Field(
        description="When the ERP last modified the record (UTC)."
    )
    source: Series[str] = pa.Field(isin=["erp"], description="Always 'erp'.")

    class Config:
        strict = True
        coerce = True


class CustomerIdentityMap(pa.DataFrameModel):
    """Which source records are one real customer (a person): every record of the CRM, the ERP and
    the database known as of the week, carried from week to week. A person keeps its id for good;
    persons merged into another are listed in `identity_merges`."""

    customer_id: Series[str] = pa.Field(
        description="The person's id: given once, by its first best record "
        "(CRM before ERP before database, then the most recent; an ERP id as "
        "'erp:<id>'), and kept for good. Profiles, dim_customers, the facts and "
        "the marts are keyed by it."
    )
    source: Series[str] = pa.Field(
        isin=["crm", "erp", "database"], description="The record's source."
    )
    source_customer_id: Series[str] = pa.Field(
        description="The record's id in its source (trimmed; case kept)."
    )
    matched_on: Series[str] = pa.Field(
        isin=["email", "phone", "id", "self"],
        description=(
            "What links the record to the others of its person (the keyed email hash first); 'self' alone."
        ),
    )
    is_primary: Series[bool] = pa.Field(
        description="The person's best record (CRM before ERP before database, "
        "then the most recent)."
    )
    email_hash: Series[str] = pa.Field(
        nullable=True,
        description="Keyed HMAC-SHA256 of the record's email "
        "(PII_HASH_KEY), what later records are matched on; never the email.",
    )
    phone_hash: Series[str] = pa.Field(
        nullable=True, description="Keyed HMAC-SHA256 of the phone's digits."
    )
    updated_at: Series[UTC_TS] = pa.Field(
        nullable=True, description="When the source last changed the record."
    )
    first_seen_week: Series[pd.Timestamp] = pa.Field(
        description="The first week the record was seen in."
    )
    last_seen_week: Series[pd.Timestamp] = pa.Field(
        description="The last week the record was seen in."
    )
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition): the "
        "identity as of that week's end."
    )

    class Config:
        strict = True
        coerce = True


class IdentityMerges(pa.DataFrameModel):
    """Persons that a week's records showed to be one: the retired id and the id it merged into."""

    retired_id: Series[str] = pa.Field(
        description="The person's id until the week; no table keeps it after."
    )
    surviving_id: Series[str] = pa.Field(
        description="The id it merged into: the person of the best record."
    )
    matched_on: Series[str] = pa.Field(
        description="The kinds of link ('email', 'phone', 'id', joined by '+') that joined them."
    )
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week of the merge."
    )

    class Config:
        strict = True
        coerce = True


class UnifiedCustomerProfiles(pa.DataFrameModel):
    """One profile per customer seen this week; required columns never null."""

    customer_id: Series[str] = pa.Field(
        unique=True,
        description="The person's id (customer_identity_map): one profile per real customer, whatever "
        "ids the CRM, the ERP, the events and the database know them by.",
    )
    email_hash: Series[str] = pa.Field(
        nullable=True,
        description="HMAC-SHA256 of the normalised email under PII_HASH_KEY (never the email).",
    )
    country: Series[str] = pa.Field(
        nullable=True,
        description="Country (ISO 3166 alpha-2), from the CRM first, then the ERP, then the database; missing when "
        "no source has one (never imputed here: the marts count it as 'unknown').",
    )
    segment: Series[str] = pa.Field(
        nullable=True,
        description="Segment (consumer, smb, enterprise); missing when no "
        "source has one (the marts count it as 'unknown').",
    )
    subscription_tier: Series[str] = pa.Field(
        description="The CRM's subscription tier ('unknown' when no source has one)."
    )
    lifetime_value: Series[float] = pa.Field(
        ge=0,
        description="Lifetime value in USD from the CRM, else the carried history of transactions, else median-imputed; never capped (an outlier is listed in outlier_fields).",
    )
    support_ticket_count: Series[int] = pa.Field(ge=0, description="Support tickets in the CRM.")
    page_views: Series[int] = pa.Field(ge=0, description="Page views in the week's events.")
    unique_features_used: Series[int] = pa.Field(
        ge=0, description="Distinct features used in the week's events."
    )
    purchase_count: Series[int] = pa.Field(ge=0, description="Purchases in the week's events.")
    purchase_amount: Series[float] = pa.Field(
        ge=0, description="USD amount of the week's purchase events."
    )
    support_interactions: Series[int] = pa.Field(
        ge=0, description="Support chats in the week's events."
    )
    week_transaction_count: Series[int] = pa.Field(
        ge=0, description="Validated transactions in the week."
    )
    week_spend_usd: Series[float] = pa.Field(
        ge=0, description="USD spend of the week's validated transactions."
    )
    days_since_last_activity: Series[int] = pa.Field(
        ge=0, description="Days from the last activity (event, purchase or CRM) to the week's end."
    )
    status: Series[str] = pa.Field(
        isin=list(STATUSES),
        description="active (< 7 days since activity), at-risk (7-30) or churned (> 30).",
    )
    value_tier: Series[str] = pa.Field(
        isin=list(TIER_NAMES),
        description="Platinum / Gold / Silver / Bronze by lifetime value.",
    )
    engagement_score: Series[float] = pa.Field(
        ge=0,
        le=100,
        description="0-100: weighted, saturating combination of purchases, features, page views and support.",
    )
    imputed_fields: Series[str] = pa.Field(
        description="Columns imputed for this profile (';'-separated, '' if none); transform_log.json says how."
    )
    in_crm: Series[bool] = pa.Field(description="The CRM had a record for the customer this week.")
    in_events: Series[bool] = pa.Field(description="The customer had events this week.")
    in_transactions: Series[bool] = pa.Field(
        description="The customer had validated transactions this week."
    )
    outlier_fields: Series[str] = pa.Field(
        description="Fields whose value is above the week's 99th percentile "
        "(';'-joined, '' for none): flagged and kept true, never capped; only "
        "the feature_* inputs are capped."
    )
    value_tier_source: Series[str] = pa.Field(
        isin=["crm", "transactions", "imputed"],
        description="Where lifetime_value (and value_tier) came from: the "
        "CRM, else the carried history of the customer's transactions (USD), else the week's median (imputed).",
    )
    status_source: Series[str] = pa.Field(
        isin=["crm", "events", "transactions", "signup"],
        description="Whose date the status reads: the latest of "
        "the CRM's last activity, the last event and the last purchase; the signup date when none is known.",
    )
    week_start: Series[pd.Timestamp] = pa.Field(
        description="Monday 00:00 UTC of the week (the partition)."
    )


PROFILE_REQUIRED = [
    name
    for name, column in UnifiedCustomerProfiles.to_schema().columns.items()
    if not column.nullable
]
