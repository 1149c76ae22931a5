"""Identity resolution: one customer across the CRM, the ERP and the transaction database.

Records are linked when they share the keyed hash of an email, the keyed hash of a phone, or a standardised
id; linked records are one customer (the connected components of those links). Each customer's id is the id
of its best record: the CRM before the ERP before the database, then the most recent within a source (an ERP
id, from an id space of its own, as ``erp:<id>``). The map keeps every source id it merged, and on what it was
matched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from customer_assets.logic.identity import keyed_hash, phone_digits, standardise_ids, valid_emails

PRIORITY = {"crm": 0, "erp": 1, "database": 2}
LINKS = ("email_hash", "phone_hash", "id_link")
MAP_COLUMNS = ["customer_id", "source", "source_customer_id", "matched_on", "is_primary"]


def standardise_erp(raw: pd.DataFrame, hash_key: str) -> tuple[pd.DataFrame, dict]:
    """ERP records with standardised ids, emails and phones hashed as the CRM's are; the most recently
    modified record of an id is kept."""
    emails = valid_emails(raw["email"])
    frame = pd.DataFrame({
        "customer_id": standardise_ids(raw["customer_id"]),
        "email_hash": keyed_hash(emails, hash_key),
        "phone_hash": keyed_hash(phone_digits(raw["phone"]), hash_key),
        "country": raw["country"].astype("str"),
        "updated_at": pd.to_datetime(raw["updated_at"], utc=True).astype("datetime64[ns, UTC]"),
        "source": "erp",
    })
    before = len(frame)
    frame = (frame.dropna(subset=["customer_id"]).sort_values(["customer_id", "updated_at"], kind="stable")
                  .drop_duplicates("customer_id", keep="last").reset_index(drop=True))
    counts = {"records": before, "invalid_emails": int((raw["email"].notna() & emails.isna()).sum()),
              "duplicate_ids": before - len(frame)}
    return frame, counts


def _components(records: pd.DataFrame) -> np.ndarray:
    """For each record, the smallest position among the records it is linked to, directly or not: labels
    spread through each shared key (integer codes, factorized once) until nothing changes."""
    label = np.arange(len(records))
    keys = []
    for key in LINKS:
        codes, uniques = pd.factorize(records[key])  # missing values get -1
        present = codes >= 0
        if present.any():
            keys.append((codes[present], present, len(uniques)))
    while True:
        before = label.copy()
        for codes, present, size in keys:
            smallest = np.full(size, len(label))
            np.minimum.at(smallest, codes, label[present])
            label[present] = np.minimum(label[present], smallest[codes])
        label = label[label]  # follow each label to its own label: components collapse in few rounds
        if np.array_equal(label, before):
            return label


def resolve(crm: pd.DataFrame, erp: pd.DataFrame, database_ids: pd.Series) -> pd.DataFrame:
    """The identity map of the week's records: one row per source record (``MAP_COLUMNS``), ``customer_id``
    being the resolved customer's id."""
    database = pd.DataFrame({"customer_id": standardise_ids(pd.Series(database_ids, dtype="str")).dropna().unique()})
    columns = ["customer_id", "email_hash", "phone_hash", "updated_at"]
    # Columns a source leaves empty (the database has no email, phone or time) are left out before concatenating.
    parts = [frame[[c for c in columns if c in frame and frame[c].notna().any()]].assign(source=source)
             for frame, source in ((crm, "crm"), (erp, "erp"), (database, "database")) if len(frame)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="bool" if c == "is_primary" else "str") for c in MAP_COLUMNS})
    records = pd.concat(parts, ignore_index=True).reindex(columns=[*columns, "source"])
    records["updated_at"] = pd.to_datetime(records["updated_at"], utc=True)
    # The CRM and the shop share customer ids; the ERP has an id space of its own, so its ids link only to itself.
    records["id_link"] = records["customer_id"].where(records["source"] != "erp", "erp:" + records["customer_id"])
    records["component"] = _components(records)
    ranked = records.assign(rank=records["source"].map(PRIORITY)).sort_values(
        ["component", "rank", "updated_at", "customer_id"], ascending=[True, True, False, True], kind="stable")
    primary = ranked.drop_duplicates("component")[["component", "customer_id", "source"]].rename(
        columns={"customer_id": "resolved", "source": "primary_source"})
    out = records.merge(primary, on="component", how="left")
    matched = pd.Series("self", index=out.index, dtype="object")
    for key, name in (("id_link", "id"), ("phone_hash", "phone"), ("email_hash", "email")):
        shared = out[key].notna() & out.duplicated(["component", key], keep=False)
        matched[shared.to_numpy()] = name
    # A customer named by its ERP record keeps the ERP's id space in its id, so it never collides with a shop id.
    resolved = out["resolved"].where(out["primary_source"] != "erp", "erp:" + out["resolved"])
    return pd.DataFrame({
        "customer_id": resolved.astype("str"), "source": out["source"].astype("str"),
        "source_customer_id": out["customer_id"].astype("str"), "matched_on": matched.astype("str"),
        "is_primary": ((out["customer_id"] == out["resolved"]) & (out["source"] == out["primary_source"])).astype(bool),
    }).sort_values(["customer_id", "source", "source_customer_id"], ignore_index=True)
