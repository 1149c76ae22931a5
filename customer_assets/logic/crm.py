"""CRM records standardised: ids, hashed contact details, typed dates and amounts."""

from __future__ import annotations

import pandas as pd

from customer_assets.logic.identity import keyed_hash, phone_digits, standardise_ids, valid_emails
from customer_assets.sources.crm import CRM_FIELDS


def standardise_crm(records: list[dict], hash_key: str) -> tuple[pd.DataFrame, dict]:
    """CRM records as typed columns; email validated then hashed, phone reduced to digits then hashed.

    Duplicate ids within the CRM keep the most recently updated record. Returns the frame and counts.
    """
    raw = pd.DataFrame(records, columns=list(CRM_FIELDS))
    emails = valid_emails(raw["email"])
    frame = pd.DataFrame({
        "customer_id": standardise_ids(raw["customer_id"]),
        "email_hash": keyed_hash(emails, hash_key),
        "phone_hash": keyed_hash(phone_digits(raw["phone"]), hash_key),
        "signup_date": pd.to_datetime(raw["signup_date"], utc=True, errors="coerce"),
        "last_activity_at": pd.to_datetime(raw["last_activity_date"], utc=True, errors="coerce"),
        "subscription_tier": raw["subscription_tier"].astype("str"),
        "lifetime_value": pd.to_numeric(raw["lifetime_value"], errors="coerce").astype(float),
        "support_ticket_count": pd.to_numeric(raw["support_ticket_count"], errors="coerce").astype(float),
        "updated_at": pd.to_datetime(raw["updated_at"], utc=True, errors="coerce"),
        "source": "crm",
    })
    for column in ("signup_date", "last_activity_at", "updated_at"):
        frame[column] = frame[column].astype("datetime64[ns, UTC]")
    before = len(frame)
    frame = (frame.dropna(subset=["customer_id"]).sort_values(["customer_id", "updated_at"], kind="stable")
                  .drop_duplicates("customer_id", keep="last").reset_index(drop=True))
    counts = {"records": before, "invalid_emails": int((raw["email"].notna() & emails.isna()).sum()),
              "duplicate_ids": before - len(frame)}
    return frame, counts
