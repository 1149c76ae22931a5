"""The calendar rows and the resolution of fact keys, with hand-computed expectations."""

import pandas as pd

from customer_assets.logic import checks
from customer_assets.logic.star import dim_date_rows, resolve_keys
from customer_assets_tests.support.frames import WEEK


def test_dim_date_has_the_weeks_seven_days_with_iso_attributes():
    days = dim_date_rows(WEEK)
    assert days["date_key"].tolist() == list(range(20261116, 20261123))
    assert days["day_of_week"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert days["is_weekend"].tolist() == [False] * 5 + [True] * 2
    assert (
        set(days["iso_week"]) == {47}
        and set(days["iso_year"]) == {2026}
        and set(days["quarter"]) == {4}
    )
    assert (days["week_start"] == pd.Timestamp("2026-11-16")).all()


def _candidate(
    tid, customer_key="C1|20261116", product_key="P1|20261116", matched_date_key=20261117
):
    return {
        "transaction_id": tid,
        "customer_key": customer_key,
        "product_key": product_key,
        "date_key": 20261117,
        "customer_id": "C1",
        "product_id": "P1",
        "timestamp": pd.Timestamp("2026-11-17 10:00", tz="UTC"),
        "week_start": pd.Timestamp("2026-11-16"),
        "amount": 10.0,
        "currency": "USD",
        "amount_usd": 10.0,
        "fx_rate": 1.0,
        "fx_rate_date": pd.Timestamp("2026-11-17"),
        "is_anomaly": False,
        "anomaly_flags": "",
        "matched_date_key": matched_date_key,
    }


def test_keys_that_resolve_to_no_row_or_to_several_are_quarantined_with_their_reasons():
    candidates = pd.DataFrame(
        [
            _candidate("T1"),
            _candidate("T2", product_key=None),
            _candidate("T3", customer_key=None, matched_date_key=None),
            _candidate("T4", customer_key="C1|20261109"),
            _candidate("T4", customer_key="C1|20261116"),  # two versions
        ]
    )
    facts, quarantined = resolve_keys(candidates)
    assert facts["transaction_id"].tolist() == ["T1"]
    assert dict(zip(quarantined["transaction_id"], quarantined["reason_codes"], strict=False)) == {
        "T2": "NO_PRODUCT_VERSION",
        "T3": "NO_CUSTOMER_VERSION;NO_DATE",
        "T4": "AMBIGUOUS_CUSTOMER_VERSION",
    }
    outcome = checks.keys_resolve(
        4, len(facts), {"NO_PRODUCT_VERSION": 1, "NO_CUSTOMER_VERSION": 1}
    )
    assert (
        not outcome.passed
        and outcome.severity == "ERROR"
        and "3 quarantined" in outcome.description
    )
    assert checks.keys_resolve(1, 1, {}).passed
