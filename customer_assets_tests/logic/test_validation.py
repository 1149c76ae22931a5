"""Every hard rule with passing and failing data; anomaly rules; the split keeps every row."""

from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_assets.dagster_types import check_validated_transactions
from customer_assets.frames import StoredFrame
from customer_assets.logic.anomalies import AnomalySettings, detect_anomalies
from customer_assets.logic.hard_rules import HARD_RULES
from customer_assets.logic.validation import (
    evaluate_hard_rules,
    split_by_hard_rules,
    validate_read,
    validate_week,
)
from customer_assets_tests.support.frames import WEEK, raw_frame, raw_row, validate, validated_rows

FAILING_ROWS = {
    "MISSING_TRANSACTION_ID": raw_row(transaction_id=None),
    "MISSING_CUSTOMER_ID": raw_row(customer_id=None, customer_exists=False),
    "MISSING_AMOUNT": raw_row(amount=None),
    "MISSING_TIMESTAMP": raw_row(timestamp=None),
    "MISSING_CURRENCY": raw_row(currency=None),
    "NON_POSITIVE_AMOUNT": raw_row(amount=-5.0),
    "NON_FINITE_AMOUNT": raw_row(amount=float("inf")),
    "INVALID_TIMESTAMP": raw_row(
        timestamp=pd.Timestamp("1970-01-01", tz="UTC"),
        customer_created_at=pd.Timestamp("1960-01-01", tz="UTC"),
    ),
    "INVALID_CURRENCY": raw_row(currency="ABC"),
    "UNSUPPORTED_CURRENCY": raw_row(currency="AED"),
    "PRECISION_MISMATCH": raw_row(currency="JPY", amount=1234.5),
    "BEFORE_CUSTOMER_CREATED": raw_row(customer_created_at=pd.Timestamp("2026-11-18", tz="UTC")),
    "FUTURE_TIMESTAMP": raw_row(timestamp=pd.Timestamp("2026-11-25", tz="UTC")),
    "OUTSIDE_WEEK": raw_row(timestamp=pd.Timestamp("2026-11-10", tz="UTC")),
    "UNKNOWN_CUSTOMER": raw_row(
        customer_exists=False, country=None, segment=None, customer_created_at=None
    ),
    "UNKNOWN_PRODUCT": raw_row(product_exists=False, product_name=None, category=None),
    "INVALID_ENCODING": raw_row(product_name="Caf\ufffd", invalid_encoding="product_name"),
    "AMOUNT_ABOVE_CEILING": raw_row(amount=2_000_000.0),
    "BELOW_MINOR_UNIT": raw_row(amount=0.0000000001),
}


@pytest.mark.parametrize("code", sorted(FAILING_ROWS))
def test_each_rule_fails_its_bad_row_and_passes_a_clean_one(code):
    bad = {**FAILING_ROWS[code]}
    bad["transaction_id"] = None if bad["transaction_id"] is None else "T2"
    failures = evaluate_hard_rules(raw_frame(raw_row(), bad), WEEK)
    assert not failures.loc[0].any(), (
        f"clean row failed {failures.columns[failures.loc[0]].tolist()}"
    )
    assert failures.loc[1, code]


def test_every_rule_is_exercised():
    assert set(FAILING_ROWS) | {
        "DUPLICATE_TRANSACTION_ID",
        "CONFLICTING_DUPLICATE",
        "DUPLICATE_ACROSS_WEEKS",
    } == {rule.code for rule in HARD_RULES}


def test_an_id_another_loaded_week_still_holds_is_quarantined_as_reused():
    """Issue 21, item 1: the validation step names the ids another loaded week holds while the
    source still holds them there; only those rows fail, whatever else they are."""
    df = raw_frame(raw_row(transaction_id="T1"), raw_row(transaction_id="T2"))
    split = split_by_hard_rules(df, WEEK, held_elsewhere=frozenset({"T2"}))
    assert split.quarantined["reason_codes"].tolist() == ["DUPLICATE_ACROSS_WEEKS"]
    assert not evaluate_hard_rules(df, WEEK)["DUPLICATE_ACROSS_WEEKS"].any()


def test_one_customer_with_thousands_of_rows_weighs_as_one_in_the_baselines():
    """Issue 21, item 6: a bot's 5,000 identical amounts became the week's median and MAD, and
    flagged the ordinary rows; weighted 1/n per customer, they are one customer among 300."""
    rng = np.random.default_rng(3)
    ordinary = pd.DataFrame(
        {
            "customer_id": [f"C{i % 300}" for i in range(900)],
            "product_id": "P1",
            "amount": np.round(rng.lognormal(4, 0.6, 900), 2),
        }
    )
    bot = pd.DataFrame({"customer_id": "BOT", "product_id": "P1", "amount": [1.5] * 5000})
    week = pd.concat([ordinary, bot], ignore_index=True)
    alone = detect_anomalies(ordinary, ordinary["amount"])
    flags = detect_anomalies(week, week["amount"])
    for rule in ("AMOUNT_MAD", "AMOUNT_IQR", "PRODUCT_MAD"):
        assert flags.loc[:899, rule].sum() <= alone[rule].sum() + 5, rule
    assert flags.loc[900:, "HIGH_FREQUENCY_CUSTOMER"].all()


def test_identical_copies_keep_one():
    df = raw_frame(
        raw_row(transaction_id="T9"), raw_row(transaction_id="T8"), raw_row(transaction_id="T9")
    )
    failures = evaluate_hard_rules(df, WEEK)
    assert failures["DUPLICATE_TRANSACTION_ID"].tolist() == [False, False, True]
    assert not failures["CONFLICTING_DUPLICATE"].any()


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_of_identical_copies_the_one_that_decoded_is_kept(order):
    """Found by the property tests' author: when only the first copy carried an encoding mark,
    neither copy was loaded, and the outcome depended on row order."""
    rows = [
        raw_row(transaction_id="T9", invalid_encoding="product_name"),
        raw_row(transaction_id="T9"),
    ]
    split = split_by_hard_rules(raw_frame(*[rows[i] for i in order]), WEEK)
    assert split.validated_count == 1 and split.raw.loc[~split.bad, "invalid_encoding"].isna().all()
    assert split.quarantined["reason_codes"].tolist() == [
        "INVALID_ENCODING;DUPLICATE_TRANSACTION_ID"
    ]


def test_conflicting_copies_are_all_quarantined():
    """A copy backdated into the week with another amount must not replace the genuine row (issue
    12, finding 4: "earliest copy kept" loaded the injected 7,777.77 and quarantined the real
    6.51)."""
    df = raw_frame(
        raw_row(transaction_id="T9", amount=6.51, timestamp=pd.Timestamp("2026-11-18", tz="UTC")),
        raw_row(
            transaction_id="T9", amount=7777.77, timestamp=pd.Timestamp("2026-11-17", tz="UTC")
        ),
        raw_row(transaction_id="T9", amount=6.51, timestamp=pd.Timestamp("2026-11-18", tz="UTC")),
        raw_row(transaction_id="T8"),
    )
    split = split_by_hard_rules(df, WEEK)
    assert validated_rows(split)["transaction_id"].tolist() == ["T8"]
    assert split.quarantined["primary_reason"].tolist() == ["CONFLICTING_DUPLICATE"] * 3


def test_amount_ceiling_compares_usd_and_is_configurable():
    df = raw_frame(
        raw_row(transaction_id="A", amount=900_000.0),
        raw_row(transaction_id="B", currency="JPY", amount=200_000_000.0),  # about 1.3M USD
        raw_row(transaction_id="C", amount=1e12),
    )
    split = split_by_hard_rules(df, WEEK)
    assert validated_rows(split)["transaction_id"].tolist() == ["A"]
    assert set(split.quarantined["primary_reason"]) == {"AMOUNT_ABOVE_CEILING"}
    assert split_by_hard_rules(df, WEEK, max_amount_usd=1e13).validated_count == 3


@pytest.mark.parametrize(
    "currency,amount,ok",
    [
        ("USD", 10.01, True),
        ("USD", 10.005, False),
        ("JPY", 1500.0, True),
        ("JPY", 1500.5, False),
        ("KWD", 1.234, True),
        ("KWD", 1.2345, False),
        ("USD", 19.99, True),
        ("EUR", 123456789.12, True),
    ],
)
def test_precision_follows_iso_minor_units(currency, amount, ok):
    failures = evaluate_hard_rules(raw_frame(raw_row(currency=currency, amount=amount)), WEEK)
    assert bool(failures.loc[0, "PRECISION_MISMATCH"]) is (not ok)


def test_split_conserves_rows_and_records_every_reason():
    df = raw_frame(
        raw_row(transaction_id="A"),
        raw_row(transaction_id="B", amount=0.0, currency="ABC"),
        raw_row(transaction_id="C", customer_id=None, customer_exists=False),
    )
    split = split_by_hard_rules(df, WEEK)
    assert split.validated_count + len(split.quarantined) == len(df)
    assert validated_rows(split)["transaction_id"].tolist() == ["A"]
    reasons = dict(
        zip(split.quarantined["transaction_id"], split.quarantined["reason_codes"], strict=False)
    )
    assert reasons == {"B": "NON_POSITIVE_AMOUNT;INVALID_CURRENCY", "C": "MISSING_CUSTOMER_ID"}
    assert (
        split.quarantined.set_index("transaction_id").loc["B", "primary_reason"]
        == "NON_POSITIVE_AMOUNT"
    )


def _usd_week(amounts, customers=None, products=None) -> pd.DataFrame:
    return raw_frame(
        *[
            raw_row(
                transaction_id=f"T{i}",
                amount=float(a),
                customer_id=(customers[i] if customers else f"C{i}"),
                product_id=(products[i] if products else "P1"),
            )
            for i, a in enumerate(amounts)
        ]
    )


def test_amount_outliers_are_flagged_by_mad_and_iqr():
    rng = np.random.default_rng(1)
    amounts = list(np.round(rng.lognormal(np.log(50), 0.3, 200), 2)) + [5000.0]
    df = _usd_week(amounts)
    flags = detect_anomalies(df, df["amount"])
    assert flags["AMOUNT_MAD"].tolist()[-1] and flags["AMOUNT_IQR"].tolist()[-1]
    assert flags["AMOUNT_MAD"].iloc[:-1].sum() <= 2
    assert not flags["HIGH_FREQUENCY_CUSTOMER"].any()


def test_one_extreme_amount_does_not_hide_the_other_outliers():
    """Issue 12, finding 4: a 1e12 amount inflated the standard deviation and AMOUNT_3SD flags fell
    from 107 to 1. Median and MAD do not move: the same rows are flagged with and without it."""
    rng = np.random.default_rng(7)
    amounts = list(np.round(rng.lognormal(np.log(40), 0.5, 2000), 2)) + [4000.0, 6000.0, 9000.0]
    df = _usd_week(amounts)
    without = detect_anomalies(df, df["amount"])
    extreme = _usd_week(amounts + [1e12])
    with_extreme = detect_anomalies(extreme, extreme["amount"])
    assert without.loc[2000:, "AMOUNT_MAD"].all()
    for rule in ("AMOUNT_MAD", "AMOUNT_IQR"):
        assert with_extreme[rule].iloc[:-1].tolist() == without[rule].tolist(), rule
        assert with_extreme[rule].iloc[-1], rule


def test_product_outliers_need_enough_transactions():
    amounts = [10.0, 10.2, 9.8, 10.4, 9.6] * 4 + [10.5, 500.0] + [9.0] * 3 + [900.0]
    products = ["P1"] * 22 + ["P2"] * 4
    df = _usd_week(amounts, products=products)
    flags = detect_anomalies(df, df["amount"], AnomalySettings(min_product_transactions=10))
    assert flags.loc[21, "PRODUCT_MAD"]  # 500 among tens in a busy product
    assert not flags.loc[25, "PRODUCT_MAD"]  # P2 has too few transactions to judge


def test_customers_above_50_transactions_are_flagged():
    customers = ["BOT"] * 51 + ["C1"] * 50
    df = _usd_week([20.0] * 101, customers=customers)
    flags = detect_anomalies(df, df["amount"])
    assert flags.loc[:50, "HIGH_FREQUENCY_CUSTOMER"].all()
    assert not flags.loc[51:, "HIGH_FREQUENCY_CUSTOMER"].any()


def test_flagged_rows_stay_validated_and_are_listed():
    df = _usd_week([20.0, 21.0, 19.5, 22.0] * 15 + [20000.0])
    validated, week = validate(df)
    anomalies, status = week.anomaly_table, week.anomalies.status
    assert status == "ok" and len(validated) == 61
    assert anomalies["transaction_id"].tolist() == ["T60"]
    assert "AMOUNT_MAD" in validated.loc[60, "anomaly_flags"] and validated.loc[60, "is_anomaly"]


def test_anomaly_detection_failure_is_recorded_not_fatal(monkeypatch):
    import customer_assets.logic.validation as validation

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(validation, "detect_anomalies", broken)
    validated, week = validate(_usd_week([1.0, 2.0]))
    anomalies, status = week.anomaly_table, week.anomalies.status
    assert status.startswith("failed: ValueError: boom")
    assert len(validated) == 2 and anomalies.empty and not validated["is_anomaly"].any()


def test_validated_rows_are_written_a_slice_of_the_raw_week_at_a_time():
    """The asset writes the validated rows a slice of the raw week at a time, with their anomaly
    columns and the USD amounts the hard rules converted (carried, not converted again)."""
    amounts = [10.0] * 12 + [5000.0, 0.0, 11.0]  # one outlier, one quarantined (amount 0)
    df = _usd_week(amounts, products=["P1"] * 15)
    week = validate_week(df, WEEK, batch_rows=4)
    parts = list(week.batches())
    assert [len(p) for p in parts] == [4, 4, 4, 2]  # the quarantined row is left out of its slice
    rows = pd.concat(parts, ignore_index=True)
    assert rows["transaction_id"].tolist() == [f"T{i}" for i in range(15) if i != 13]
    assert "T12" in rows.loc[rows["is_anomaly"], "transaction_id"].tolist()
    assert (
        rows.loc[rows["is_anomaly"], "transaction_id"].tolist()
        == week.anomaly_table["transaction_id"].tolist()
    )
    assert week.anomalies.status == "ok"
    assert rows["amount_usd"].tolist() == rows["amount"].tolist() and (rows["fx_rate"] == 1.0).all()
    # The rate of the transaction day, or the last published before it (the shipped file may end
    # earlier).
    assert rows["fx_rate_date"].nunique() == 1 and rows["fx_rate_date"].iloc[0] <= pd.Timestamp(
        "2026-11-17"
    )


def test_fixed_prices_and_equal_amounts_are_judged_sensibly():
    """Review findings: with a tiny MAD, two list prices 5% apart flagged 40% of a product's rows;
    with a MAD of 0 (most amounts equal), a 1,000 times larger amount was not flagged at all."""
    rng = np.random.default_rng(3)
    two_prices = [p * (1 + rng.normal(0, 0.002)) for p in [100.0] * 60 + [105.0] * 40]
    df = _usd_week(two_prices)
    flags = detect_anomalies(df, df["amount"])
    assert not flags["AMOUNT_MAD"].any() and not flags["PRODUCT_MAD"].any()
    equal = _usd_week([10.0] * 20 + [10_000.0])
    flags = detect_anomalies(equal, equal["amount"])
    assert flags["AMOUNT_MAD"].tolist() == [False] * 20 + [True]
    assert flags["PRODUCT_MAD"].tolist() == [False] * 20 + [True]


@pytest.mark.parametrize(
    "amount,currency", [(0.0000000001, "USD"), (5e-324, "USD"), (0.4, "JPY"), (0.0009, "KWD")]
)
def test_an_amount_below_the_currencys_minor_unit_is_quarantined(amount, currency):
    """Issue 21, item 10: ``0.0000000001`` USD passed every rule (its excess decimals are within the
    precision rule's float tolerance), its USD amount rounded to 0 and the week failed in a pandera
    check."""
    split = split_by_hard_rules(
        raw_frame(raw_row(), raw_row(transaction_id="DUST", amount=amount, currency=currency)), WEEK
    )
    assert split.bad.tolist() == [False, True]
    assert split.quarantined["primary_reason"].tolist() == ["BELOW_MINOR_UNIT"]
    validated, _ = validate(split.raw)
    check_validated_transactions(validated)  # the rows kept pass the model


@pytest.mark.parametrize("amount,currency", [(0.01, "USD"), (1.0, "JPY"), (0.01, "EUR")])
def test_one_minor_unit_passes(amount, currency):
    failures = evaluate_hard_rules(raw_frame(raw_row(amount=amount, currency=currency)), WEEK)
    assert not failures.loc[0].any(), failures.columns[failures.loc[0]].tolist()


def test_a_model_violation_names_the_offending_transaction_ids():
    """Issue 21, item 10: the step failed with ``greater_than(0) failure cases: 0.0``, naming no
    transaction."""
    from customer_assets.dagster_types import ModelViolation

    validated, _ = validate(raw_frame(*[raw_row(transaction_id=f"T{i}") for i in range(15)]))
    broken = validated.assign(amount_usd=[0.0] * 12 + [1.0] * 3)
    with pytest.raises(ModelViolation) as raised:
        check_validated_transactions(broken)
    message = str(raised.value)
    assert "ValidatedTransactions" in message and "amount_usd" in message
    assert (
        all(f"'T{i}'" in message for i in range(10))
        and "'T10'" not in message
        and "12 rows" in message
    )


def test_a_week_read_from_its_file_in_batches_is_validated_as_in_memory(tmp_path):
    """The asset reads the extract's file a batch at a time (``StoredFrame.numbered_batches``): with
    an identical copy and a conflicting copy of ids in other batches, an outlier and a quarantined
    row, the outcome is that of the week in memory."""
    rows = [
        raw_row(transaction_id=f"T{i}", amount=10.0 + i % 3, customer_id=f"C{i % 5}")
        for i in range(20)
    ]
    rows[7]["amount"], rows[11]["amount"] = 5000.0, 0.0
    rows += [dict(rows[1]), {**rows[2], "amount": 99.0}]  # T1 copied, T2 in conflict
    df = raw_frame(*rows)
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    whole = validate_week(df, WEEK)
    batched = validate_read(partial(StoredFrame(path).numbered_batches, batch_rows=4), WEEK)
    assert batched.split.bad.tolist() == whole.split.bad.tolist()
    assert sorted(batched.split.quarantined["reason_codes"]) == [
        "CONFLICTING_DUPLICATE",
        "CONFLICTING_DUPLICATE",
        "DUPLICATE_TRANSACTION_ID",
        "NON_POSITIVE_AMOUNT",
    ]
    for part in ("failures", "quarantined", "fx"):
        pd.testing.assert_frame_equal(getattr(batched.split, part), getattr(whole.split, part))
    pd.testing.assert_frame_equal(batched.anomaly_table, whole.anomaly_table)
    assert batched.anomaly_table["transaction_id"].tolist() == ["T7"]
    pd.testing.assert_frame_equal(
        pd.concat(list(batched.batches()), ignore_index=True),
        pd.concat(list(whole.batches()), ignore_index=True),
    )
