"""Enrichment steps with hand-computed expectations, and the pandera model of the result."""

import pandas as pd
import pytest

from customer_assets.logic.currency import FX_SOURCE
from customer_assets.logic.transform import (
    add_customer_metrics,
    add_fx_source,
    add_product_metrics,
    add_segments,
    add_time_dimensions,
    customer_lookup,
    customer_metrics,
    enrich,
    product_ranks,
    week_figures,
    week_metrics,
)
from customer_assets.schemas import TransformedTransactions
from customer_assets_tests.support.frames import WEEK, raw_frame, raw_row, validate


def _validated(*rows):
    return validate(raw_frame(*rows))[0]


def test_time_dimensions_in_utc():
    df = add_time_dimensions(
        raw_frame(raw_row(timestamp=pd.Timestamp("2026-11-22 23:30", tz="UTC")))
    )
    row = df.iloc[0]
    assert (row.day_of_week, row.hour_of_day, row.is_weekend) == ("Sunday", 23, True)
    assert (row.week_number, row.month, row.quarter) == (47, 11, 4)


def test_usd_amounts_are_carried_from_validation_and_fail_loudly_without_a_rate():
    df = add_fx_source(
        _validated(
            raw_row(amount=10.0, currency="USD"),
            raw_row(transaction_id="T2", amount=1000.0, currency="JPY"),
        )
    )
    assert (
        df.loc[0, "amount_usd"] == 10.0
        and df.loc[0, "amount"] == 10.0
        and df.loc[0, "currency"] == "USD"
    )
    assert (df["fx_source"] == FX_SOURCE).all()
    # 1,000 JPY at the ECB's last rate on or before Tuesday 2026-11-17, to six decimals.
    jpy = df.loc[1]
    assert jpy["amount_usd"] == round(1000.0 * jpy["fx_rate"], 6) and 0 < jpy["fx_rate"] < 0.02
    with pytest.raises(ValueError, match="UNSUPPORTED_CURRENCY"):
        add_fx_source(df.assign(amount_usd=float("nan")))


def _history(**rows):
    return pd.DataFrame([{"customer_id": cid, **values} for cid, values in rows.items()]).astype(
        {
            "first_purchase_at": "datetime64[ns, UTC]",
            "last_purchase_before_week": "datetime64[ns, UTC]",
        }
    )


def _c1_history_of_530():
    """C1 has bought for $530 in 7 transactions since 2026-01-23, last on 2026-11-01."""
    return _history(
        C1={
            "lifetime_value_usd": 530.0,
            "transaction_count": 7,
            "first_purchase_at": pd.Timestamp("2026-01-23", tz="UTC"),
            "last_purchase_before_week": pd.Timestamp("2026-11-01", tz="UTC"),
        }
    )


def test_customer_metrics_come_from_history_as_of_the_week_end():
    df = _validated(
        raw_row(transaction_id="A", customer_id="C1", amount=30.0),
        raw_row(transaction_id="B", customer_id="C2", amount=40.0),
    )
    history = _c1_history_of_530()
    out = add_customer_metrics(
        df, customer_metrics(week_figures(df).customers, history, WEEK)
    ).set_index("customer_id")
    assert out.loc["C1", "customer_lifetime_value"] == 530.0
    assert out.loc["C1", "customer_transaction_count"] == 7
    assert (
        out.loc["C1", "days_since_first_purchase"]
        == (pd.Timestamp("2026-11-23") - pd.Timestamp("2026-01-23")).days
    )
    # C2 is missing from the history: this week's own rows stand in, nothing is null.
    assert (
        out.loc["C2", "customer_lifetime_value"] == 40.0
        and out.loc["C2", "customer_transaction_count"] == 1
    )


def test_product_rank_and_category_price():
    df = raw_frame(
        raw_row(transaction_id="1", product_id="P1", category="Office"),
        raw_row(transaction_id="2", product_id="P1", category="Office"),
        raw_row(transaction_id="3", product_id="P2", category="Toys"),
        raw_row(transaction_id="4", product_id="P3", category=None),
    )
    prices = pd.DataFrame({"category": ["Office", "Toys"], "avg_price": [10.0, 30.0]})
    products = pd.DataFrame({"product_id": ["P1", "P2", "P3"], "transactions": [2, 1, 1]})
    out = add_product_metrics(df, product_ranks(products), prices)
    assert out["product_popularity_rank"].tolist() == [1, 1, 2, 2]
    assert out["category_avg_price"].tolist() == [10.0, 10.0, 30.0, 20.0]


@pytest.mark.parametrize(
    "usd,size", [(49.99, "small"), (50.0, "medium"), (200.0, "medium"), (200.01, "large")]
)
def test_transaction_size_boundaries(usd, size):
    df = pd.DataFrame(
        {
            "amount_usd": [usd],
            "days_since_first_purchase": [100],
            "_last_before_week": [pd.Timestamp("2026-11-10", tz="UTC")],
        }
    )
    assert add_segments(df, WEEK).loc[0, "transaction_size"] == size


@pytest.mark.parametrize(
    "first_days,last_before,lifecycle",
    [
        (10, None, "new"),
        (400, "2026-11-10", "active"),
        (400, "2026-08-17", "dormant"),
        (400, "2026-08-18", "active"),
    ],
)
def test_customer_lifecycle(first_days, last_before, lifecycle):
    df = pd.DataFrame(
        {
            "amount_usd": [10.0],
            "days_since_first_purchase": [first_days],
            "_last_before_week": [pd.Timestamp(last_before, tz="UTC") if last_before else pd.NaT],
        }
    )
    df["_last_before_week"] = pd.to_datetime(df["_last_before_week"], utc=True)
    assert add_segments(df, WEEK).loc[0, "customer_lifecycle"] == lifecycle


OFFICE_PRICES = pd.DataFrame({"category": ["Office"], "avg_price": [15.0]})


def _c1_history(last_before_week: str) -> pd.DataFrame:
    """C1 bought 3 times for $100 since 2025-02-01, last before this week on
    ``last_before_week``."""
    return _history(
        C1={
            "lifetime_value_usd": 100.0,
            "transaction_count": 3,
            "first_purchase_at": pd.Timestamp("2025-02-01", tz="UTC"),
            "last_purchase_before_week": pd.Timestamp(last_before_week, tz="UTC"),
        }
    )


def test_an_enriched_week_satisfies_its_model():
    validated = _validated(
        raw_row(transaction_id="A", currency="EUR", amount=12.5),
        raw_row(transaction_id="B", customer_id="C2", currency="JPY", amount=3000.0),
    )
    out = enrich(
        validated,
        week_metrics(week_figures(validated), _c1_history("2026-11-02"), OFFICE_PRICES, WEEK),
        WEEK,
    )
    TransformedTransactions.validate(out)
    assert out["week_start"].unique().tolist() == [pd.Timestamp("2026-11-16")]
    assert (out["amount_usd"] > 0).all()


def test_batches_enriched_with_the_week_metrics_equal_the_whole_week():
    """The transform asset enriches the week a batch at a time; ranks and customer totals stay
    week-wide."""
    validated = _validated(
        raw_row(transaction_id="A", customer_id="C1", product_id="P1", currency="EUR", amount=12.5),
        raw_row(
            transaction_id="B", customer_id="C2", product_id="P2", currency="JPY", amount=3000.0
        ),
        raw_row(transaction_id="C", customer_id="C1", product_id="P2", amount=80.0),
        raw_row(transaction_id="D", customer_id="C3", product_id="P2", amount=250.0),
        raw_row(transaction_id="E", customer_id="C2", product_id="P1", amount=20.0),
    )
    history = _c1_history("2026-07-02")
    metrics = week_metrics(week_figures(validated), history, OFFICE_PRICES, WEEK)
    whole = enrich(validated, metrics, WEEK)  # the week as one batch
    batched = pd.concat(
        [enrich(validated.iloc[i : i + 2], metrics, WEEK) for i in range(0, len(validated), 2)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(batched, whole)
    # P2 has three transactions in the week, P1 two: the ranks are the week's even in a two-row
    # batch.
    assert dict(zip(batched["product_id"], batched["product_popularity_rank"], strict=False)) == {
        "P2": 1,
        "P1": 2,
    }
    by_customer = batched.groupby("customer_id")["customer_transaction_count"].first().to_dict()
    assert by_customer == {"C1": 3, "C2": 2, "C3": 1}  # C1's history counts the week already
    assert batched.set_index("transaction_id").loc["A", "customer_lifecycle"] == "dormant"


def test_an_unranked_product_is_an_error_not_a_null():
    validated = _validated(raw_row(transaction_id="A", product_id="P1"))
    with pytest.raises(ValueError, match="no product_id to rank"):
        add_product_metrics(
            validated,
            product_ranks(pd.DataFrame({"product_id": ["P2"], "transactions": [1]})),
            pd.DataFrame({"category": [], "avg_price": []}),
        )


@pytest.mark.parametrize("rows", [0, 1, 5])
def test_the_customer_lookup_gives_what_a_left_join_on_the_id_gives(rows):
    """Each batch looks its customers up in the week's metrics (``customer_lookup``, whose hash
    table is built once) rather than joining: same rows, values and types, a customer missing from
    the metrics included."""
    week = _validated(*(raw_row(transaction_id=f"T{i}", customer_id=f"C{i % 3}") for i in range(6)))
    history = _c1_history_of_530()
    metrics = customer_metrics(week_figures(week).customers, history, WEEK)
    batch = (
        _validated(
            *(raw_row(transaction_id=f"B{i}", customer_id=f"C{i % 3}") for i in range(rows - 1)),
            raw_row(transaction_id="X", customer_id="NOT_IN_WEEK"),
        )
        if rows
        else week.iloc[:0]
    )
    expected = batch.join(metrics, on="customer_id")
    got = add_customer_metrics(batch, customer_lookup(metrics))
    pd.testing.assert_frame_equal(got, expected)
