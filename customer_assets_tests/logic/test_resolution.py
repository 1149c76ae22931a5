"""Identity resolution across CRM, ERP and database records, with hand-computed expectations."""

import pandas as pd

from customer_assets.logic.resolution import resolve, standardise_erp


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_records_sharing_an_email_phone_or_id_are_one_customer_named_by_its_best_record():
    crm = pd.DataFrame({"customer_id": ["C1", "C2"], "email_hash": ["e1", "e2"], "phone_hash": [None, "p2"],
                        "updated_at": [_ts("2026-11-17"), _ts("2026-11-18")]})
    erp = pd.DataFrame({"customer_id": ["ERP-9", "ERP-8", "ERP-7"], "email_hash": ["e1", None, "e7"],
                        "phone_hash": [None, "p2", None], "updated_at": [_ts("2026-11-19")] * 3})
    mapping = resolve(crm, erp, pd.Series([" c1", "C3", "ERP-7"]))
    rows = {(r.source, r.source_customer_id): (r.customer_id, r.matched_on, r.is_primary) for r in mapping.itertuples()}
    assert rows == {
        ("crm", "C1"): ("C1", "email", True), ("erp", "ERP-9"): ("C1", "email", False),  # same email
        ("database", "C1"): ("C1", "id", False),                                        # same id as the CRM's
        ("crm", "C2"): ("C2", "phone", True), ("erp", "ERP-8"): ("C2", "phone", False),  # same phone
        ("database", "C3"): ("C3", "self", True),                                       # alone
        # The ERP has ids of its own: its ERP-7 is not the shop's ERP-7, and keeps its namespace when it names one.
        ("erp", "ERP-7"): ("erp:ERP-7", "self", True), ("database", "ERP-7"): ("ERP-7", "self", True),
    }


def test_a_chain_of_links_is_one_customer_and_the_most_recent_crm_record_wins():
    crm = pd.DataFrame({"customer_id": ["A", "B"], "email_hash": ["e1", None], "phone_hash": [None, "p1"],
                        "updated_at": [_ts("2026-11-16"), _ts("2026-11-20")]})
    erp = pd.DataFrame({"customer_id": ["X"], "email_hash": ["e1"], "phone_hash": ["p1"],
                        "updated_at": [_ts("2026-11-21")]})
    mapping = resolve(crm, erp, pd.Series([], dtype="str"))
    assert set(mapping["customer_id"]) == {"B"} and mapping["is_primary"].sum() == 1  # A - X - B: one customer


def test_erp_records_are_standardised_and_hashed_like_the_crm():
    raw = pd.DataFrame({"customer_id": [" erp-1 ", "ERP-1", "ERP-2"], "email": ["Ann@Example.com", "ann@example.com", "bad"],
                        "phone": ["+1 555 0100", None, "555-0100"], "country": ["US", "US", "DE"],
                        "updated_at": [_ts("2026-11-16"), _ts("2026-11-18"), _ts("2026-11-17")]})
    frame, counts = standardise_erp(raw, "key")
    assert frame["customer_id"].tolist() == ["ERP-1", "ERP-2"]  # the most recent record of ERP-1 is kept
    assert counts == {"records": 3, "invalid_emails": 1, "duplicate_ids": 1}
    assert frame["email_hash"].str.fullmatch(r"[0-9a-f]{64}").iloc[0] and pd.isna(frame["email_hash"].iloc[1])
    assert frame["phone_hash"].iloc[1] is not None and "555" not in frame["phone_hash"].iloc[1]
