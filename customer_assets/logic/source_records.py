"""The records identity resolution reads: the ERP's, standardised as the CRM's are
(crm_records.py), and the week's records of the three sources as one frame (``week_records``).
"""

from __future__ import annotations

import pandas as pd

from customer_assets.logic.crm_records import latest_per_id, standardised_counts
from customer_assets.logic.identity import keyed_hash, phone_digits, standardise_ids, valid_emails

RECORD = ["source", "source_customer_id"]  # what names a record: its source and its id there
_TS = "datetime64[ns, UTC]"


def standardise_erp(raw: pd.DataFrame, hash_key: str) -> tuple[pd.DataFrame, dict]:
    """ERP records with standardised ids, emails and phones hashed as the CRM's are; the most
    recently modified record of an id is kept."""
    emails = valid_emails(raw["email"])
    frame = pd.DataFrame(
        {
            "customer_id": standardise_ids(raw["customer_id"]),
            "email_hash": keyed_hash(emails, hash_key),
            "phone_hash": keyed_hash(phone_digits(raw["phone"]), hash_key),
            "country": raw["country"].astype("str"),
            "updated_at": pd.to_datetime(raw["updated_at"], utc=True).astype("datetime64[ns, UTC]"),
            "source": "erp",
        }
    )
    before = len(frame)
    frame = latest_per_id(frame)
    return frame, standardised_counts(raw["email"], emails, before, len(frame))


def _no_text(index: pd.Index) -> pd.Series:
    """A text column with no value: missing as the text of the runtime's dtype represents it."""
    return pd.Series("", index=index, dtype="str").where(pd.Series(False, index=index), None)


def week_records(crm: pd.DataFrame, erp: pd.DataFrame, database_ids: pd.Series) -> pd.DataFrame:
    """The week's records of the three sources as one frame: source, source id (trimmed, case kept),
    the keyed email and phone hashes, the record's update time (the database's ids have neither
    contact nor time)."""
    database = pd.DataFrame(
        {"customer_id": standardise_ids(pd.Series(database_ids, dtype="str")).dropna().unique()}
    )
    parts = []
    for frame, source in ((crm, "crm"), (erp, "erp"), (database, "database")):
        if not len(frame):
            continue
        part = pd.DataFrame(
            {"source": source, "source_customer_id": frame["customer_id"].astype("str")}
        )
        for column in ("email_hash", "phone_hash"):
            part[column] = (
                frame[column].astype("str").where(frame[column].notna(), None)
                if column in frame
                else _no_text(frame.index)
            )
        part["updated_at"] = (
            pd.to_datetime(frame["updated_at"], utc=True)
            if "updated_at" in frame
            else pd.Series(pd.NaT, index=frame.index, dtype=_TS)
        )
        parts.append(part)
    if not parts:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=_TS if c == "updated_at" else "str")
                for c in [*RECORD, "email_hash", "phone_hash", "updated_at"]
            }
        )
    records = pd.concat(parts, ignore_index=True)
    records["updated_at"] = records["updated_at"].astype(_TS)
    return records.drop_duplicates(RECORD, keep="last").reset_index(drop=True)
