"""CRM records standardised: ids, hashed contact details, typed dates and amounts."""

from __future__ import annotations

import pandas as pd

from customer_assets.logic.identity import keyed_hash, phone_digits, standardise_ids, valid_emails

# The fields of a CRM record, in the order the CRM defines them: the API's records, the source
# table's columns (sources/crm_api.py reads both).
CRM_FIELDS = (
    "customer_id",
    "email",
    "phone",
    "signup_date",
    "last_activity_date",
    "subscription_tier",
    "lifetime_value",
    "support_ticket_count",
    "updated_at",
)
DATE_FIELDS = {
    "signup_date": "signup_date",
    "last_activity_date": "last_activity_at",
    "updated_at": "updated_at",
}


def _timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 text (or date and datetime values) as UTC timestamps, whatever mix of forms a column
    holds (dates, seconds, fractions, offsets); what is not ISO 8601 becomes missing."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def standardise_crm(records: list[dict] | pd.DataFrame, hash_key: str) -> tuple[pd.DataFrame, dict]:
    """CRM records as typed columns; email validated then hashed, phone reduced to digits then
    hashed.

    Duplicate ids within the CRM keep the most recently updated record. Returns the frame and
    counts, among them the dates that were given but are not ISO 8601 (kept as missing, not
    guessed).
    """
    raw = (
        records
        if isinstance(records, pd.DataFrame)
        else pd.DataFrame(records, columns=list(CRM_FIELDS))
    )
    emails = valid_emails(raw["email"])
    dates = {target: _timestamps(raw[field]) for field, target in DATE_FIELDS.items()}
    unparseable = {
        field: int(
            (
                raw[field].notna()
                & (raw[field].astype("str").str.strip() != "")
                & dates[target].isna()
            ).sum()
        )
        for field, target in DATE_FIELDS.items()
    }
    frame = pd.DataFrame(
        {
            # Trimmed, case kept: identity resolution links a CRM id to the shop's customer it names
            # (identity_links.py).
            "customer_id": standardise_ids(raw["customer_id"]),
            "email_hash": keyed_hash(emails, hash_key),
            "phone_hash": keyed_hash(phone_digits(raw["phone"]), hash_key),
            "signup_date": dates["signup_date"],
            "last_activity_at": dates["last_activity_at"],
            "subscription_tier": raw["subscription_tier"].astype("str"),
            "lifetime_value": pd.to_numeric(raw["lifetime_value"], errors="coerce").astype(float),
            "support_ticket_count": pd.to_numeric(
                raw["support_ticket_count"], errors="coerce"
            ).astype(float),
            "updated_at": dates["updated_at"],
            "source": "crm",
        }
    )
    for column in DATE_FIELDS.values():
        frame[column] = frame[column].astype("datetime64[ns, UTC]")
    before = len(frame)
    frame = latest_per_id(frame)
    counts = {
        **standardised_counts(raw["email"], emails, before, len(frame)),
        "unparseable_dates": sum(unparseable.values()),
    }
    return frame, counts


def latest_per_id(frame: pd.DataFrame) -> pd.DataFrame:
    """One record per id, the last updated (of equal times, the last read); records without an id
    left out (counted by the caller)."""
    return (
        frame.dropna(subset=["customer_id"])
        .sort_values(["customer_id", "updated_at"], kind="stable")
        .drop_duplicates("customer_id", keep="last")
        .reset_index(drop=True)
    )


def standardised_counts(
    given: pd.Series, valid: pd.Series, records: int, kept: int
) -> dict[str, int]:
    """What a source's standardisation counts (the CRM's, the ERP's): its ``records``, the emails
    given but not valid (``valid`` missing where ``given`` is not), and the records
    ``latest_per_id`` left out of them, ``kept`` remaining (``duplicate_ids``)."""
    return {
        "records": records,
        "invalid_emails": int((given.notna() & valid.isna()).sum()),
        "duplicate_ids": records - kept,
    }
