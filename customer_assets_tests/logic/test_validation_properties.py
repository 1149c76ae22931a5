"""Property-based tests of the hard rules over random dirty weeks (hypothesis).

A strategy builds a week of raw rows as the extract delivers them: clean rows mixed with every kind
of dirt the rules exist for, identical copies and same-id rows with other content. The joined
columns (customer and product facts, the extract's encoding marks) follow from the ids, as they do
in the extract's SQL join and decoding, so two rows with the same content are the same row. Copies
that differ only outside the content (say, only the first carries an encoding mark) are not
generated: the duplicate rule keeps the first copy, so when the first is marked neither is
validated, and the outcome depends on the row order.

Properties: every row ends in exactly one of validated or quarantined, with the reasons an
independent row-by-row oracle gives; what is validated is unique, finite and free of conflicting
ids; the row order does not change the outcome and a split is deterministic; the validated batches
the asset writes are the whole validated frame.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from customer_assets.logic.currency import ecb_usd_rates, iso4217_minor_units, supported_currencies
from customer_assets.logic.hard_rules import DEFAULT_MAX_AMOUNT_USD, HARD_RULES
from customer_assets.logic.validation import (
    ANOMALY_INPUTS,
    detect_week_anomalies,
    split_by_hard_rules,
    validate_week,
    validated_batches,
)
from customer_assets_tests.support.frames import WEEK, raw_row, validated_rows

# No example database (database=None), and hypothesis' other caches (constants it collects from the
# source) outside the repository: nothing is written under the working directory.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "customer_assets_hypothesis")
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RULE_CODES = [rule.code for rule in HARD_RULES]
CONTENT = ["customer_id", "product_id", "amount", "currency", "timestamp"]

UTC = "UTC"
START, END, NOW = (pd.Timestamp(t) for t in (WEEK.week_start, WEEK.week_end, WEEK.now))

# What the LEFT JOINs of the extract give for each customer id: (country, segment, created_at,
# exists, mark). C3 is created in the middle of the week; C5's segment held bytes that were not
# UTF-8.
CUSTOMERS = {
    "C1": ("US", "consumer", pd.Timestamp("2025-01-01", tz=UTC), True, None),
    "C2": ("DE", "business", pd.Timestamp("2020-03-01", tz=UTC), True, None),
    "C3": ("FR", "consumer", pd.Timestamp("2026-11-19 12:00", tz=UTC), True, None),
    "C5": ("GB", "consum\ufffdr", pd.Timestamp("2024-05-05", tz=UTC), True, "segment"),
    "C404": (None, None, None, False, None),
    None: (None, None, None, False, None),
}
# product id -> (name, category, exists, mark). P9's name held bytes that were not UTF-8.
PRODUCTS = {
    "P1": ("Stapler", "Office", True, None),
    "P2": ("Paper", "Office", True, None),
    "P9": ("Caf\ufffd", "Food", True, "product_name"),
    "P404": (None, None, False, None),
    None: (None, None, False, None),
}
COLUMNS = list(raw_row())

# A row is a clean transaction with none, one or two kinds of dirt (dirt of several columns
# combines).
DIRT = {
    "transaction_id": ["missing_id", "undecodable_id", "reused_id"],
    "customer": [
        "missing_customer",
        "unknown_customer",
        "customer_created_midweek",
        "undecodable_customer",
    ],
    "product": ["missing_product", "unknown_product", "undecodable_product"],
    "currency": ["missing_currency", "invalid_currency", "unsupported_currency"],
    "amount": [
        "missing_amount",
        "nan_amount",
        "inf_amount",
        "minus_inf_amount",
        "zero_amount",
        "negative_amount",
        "excess_decimals",
        "huge_amount",
        "dust_amount",
    ],
    "timestamp": [
        "missing_timestamp",
        "before_week",
        "after_week",
        "future",
        "before_2000",
        "week_end",
    ],
}
DIRT_KINDS = [kind for kinds in DIRT.values() for kind in kinds]


@st.composite
def amounts(draw, currency, dirt: set[str]):
    whole = currency == "JPY"
    if "excess_decimals" in dirt:  # one more digit than the currency has (JPY has none)
        return (
            draw(st.integers(1, 100_000)) + 0.5
            if whole
            else draw(st.integers(1, 100_000)) / 100 + 0.005
        )
    if "dust_amount" in dirt:  # below the currency's minor unit (issue 21, item 10)
        return draw(
            st.sampled_from([5e-324, 1e-10, 0.004, 0.4] if whole else [5e-324, 1e-10, 0.004])
        )
    if "huge_amount" in dirt:  # at and above the 1,000,000 USD ceiling
        return draw(
            st.sampled_from(
                [2e8, 1e12] if whole else [1_000_000.0, 1_000_000.01, 2_000_000.0, 1e12]
            )
        )
    if "negative_amount" in dirt:
        return -draw(st.integers(1, 500_000)) / 100
    for kind, value in (
        ("missing_amount", None),
        ("nan_amount", float("nan")),
        ("inf_amount", float("inf")),
        ("minus_inf_amount", float("-inf")),
        ("zero_amount", 0.0),
    ):
        if kind in dirt:
            return value
    return float(draw(st.integers(1, 2_000_000))) if whole else draw(st.integers(1, 500_000)) / 100


@st.composite
def timestamps(draw, dirt: set[str]):
    minutes = lambda lo, hi: timedelta(minutes=draw(st.integers(lo, hi)))  # noqa: E731
    if "missing_timestamp" in dirt:
        return None
    if "before_week" in dirt:
        return START - minutes(1, 60 * 1440)
    if "after_week" in dirt:  # after the week, not yet in the future
        return END + minutes(0, int((NOW - END).total_seconds() // 60))
    if "future" in dirt:
        return NOW + minutes(1, 60 * 1440)
    if "before_2000" in dirt:
        return draw(
            st.sampled_from(
                [pd.Timestamp("1970-01-01", tz=UTC), pd.Timestamp("1999-12-31 23:59", tz=UTC)]
            )
        )
    if "week_end" in dirt:  # the first instant of the next week
        return END
    return START + minutes(0, 7 * 1440 - 1)  # from the first instant of the week on


def joined_row(transaction_id, customer_id, product_id, amount, currency, timestamp) -> dict:
    """One raw row: the transaction's own columns plus what the extract joins and marks from its
    ids."""
    country, segment, created, customer_exists, customer_mark = CUSTOMERS[customer_id]
    name, category, product_exists, product_mark = PRODUCTS[product_id]
    id_mark = (
        "transaction_id" if transaction_id is not None and "\ufffd" in transaction_id else None
    )
    marks = [m for m in (id_mark, customer_mark, product_mark) if m]
    return {
        "transaction_id": transaction_id,
        "customer_id": customer_id,
        "country": country,
        "segment": segment,
        "amount": amount,
        "currency": currency,
        "timestamp": timestamp,
        "product_id": product_id,
        "product_name": name,
        "category": category,
        "customer_created_at": created,
        "customer_exists": customer_exists,
        "product_exists": product_exists,
        "invalid_encoding": ";".join(marks) if marks else None,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows in the raw week's column types (as ``frames.raw_frame``, also when there are
    none)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("timestamp", "customer_created_at"):
        df[column] = pd.to_datetime(df[column], utc=True)
    df["amount"] = df["amount"].astype(float)
    for column in ("customer_exists", "product_exists"):
        df[column] = df[column].astype(bool)
    df["invalid_encoding"] = df["invalid_encoding"].astype(object)
    return df


@st.composite
def dirty_weeks(draw, max_rows: int = 15, max_copies: int = 5) -> pd.DataFrame:
    rows: list[dict] = []
    for i in range(draw(st.integers(0, max_rows))):
        dirt = set(
            draw(
                st.one_of(
                    st.just([]), st.lists(st.sampled_from(DIRT_KINDS), min_size=1, max_size=2)
                )
            )
        )
        # another row's id with its own content: usually a conflict
        if "reused_id" in dirt and rows:
            transaction_id = rows[draw(st.integers(0, len(rows) - 1))]["transaction_id"]
        else:
            transaction_id = (
                None
                if "missing_id" in dirt
                else f"T\ufffd{i}"
                if "undecodable_id" in dirt
                else f"T{i}"
            )
        customer = draw(st.sampled_from(["C1", "C2"]))
        for kind, other in (
            ("missing_customer", None),
            ("unknown_customer", "C404"),
            ("customer_created_midweek", "C3"),
            ("undecodable_customer", "C5"),
        ):
            customer = other if kind in dirt else customer
        product = draw(st.sampled_from(["P1", "P2"]))
        for kind, other in (
            ("missing_product", None),
            ("unknown_product", "P404"),
            ("undecodable_product", "P9"),
        ):
            product = other if kind in dirt else product
        currency = draw(st.sampled_from(["USD", "EUR", "GBP", "JPY"]))
        for kind, other in (
            ("missing_currency", None),
            ("invalid_currency", "ABC"),
            ("unsupported_currency", "AED"),
        ):
            currency = other if kind in dirt else currency
        rows.append(
            joined_row(
                transaction_id,
                customer,
                product,
                draw(amounts(currency, dirt)),
                currency,
                draw(timestamps(dirt)),
            )
        )
    # Copies of drawn rows, anywhere in the week: identical ones, and same-id ones with another
    # amount.
    for _ in range(draw(st.integers(0, max_copies if rows else 0))):
        original = rows[draw(st.integers(0, len(rows) - 1))]
        copy = dict(original)
        if draw(st.booleans()):
            amount = copy["amount"]
            # round: a changed amount, not a float representation error (which the precision rule
            # allows)
            copy["amount"] = (
                round(amount * 2 + 1, 2) if amount is not None and math.isfinite(amount) else 7.0
            )
        rows.insert(draw(st.integers(0, len(rows))), copy)
    return frame(rows)


# --- an independent oracle: what each row should fail, written out row by row
# ---------------------------------

_RATES: dict[tuple[str, pd.Timestamp], float] = {}


def usd_rate(currency, timestamp) -> float:
    """USD per unit at the last ECB publication on or before the transaction's UTC day (NaN if
    none)."""
    if currency is None or pd.isna(timestamp):
        return math.nan
    day = timestamp.tz_convert(UTC).tz_localize(None).normalize()
    if (currency, day) not in _RATES:
        rates = ecb_usd_rates()
        published = rates[currency].dropna() if currency in rates.columns else None
        published = None if published is None else published[published.index <= day]
        _RATES[currency, day] = (
            float(published.iloc[-1]) if published is not None and len(published) else math.nan
        )
    return _RATES[currency, day]


def content_key(row: dict) -> tuple:
    """A row's transaction content, NaN/NaT/None as one missing value (as ``drop_duplicates``
    compares)."""
    return tuple(None if pd.isna(row[c]) else row[c] for c in CONTENT)


def too_many_decimals(amount: float, currency: str) -> bool:
    units = iso4217_minor_units().get(currency)
    if units is None or math.isnan(amount) or math.isinf(amount):
        return False
    return Decimal(repr(amount)).normalize().as_tuple().exponent < -units


def below_float_noise(amount: float, currency: str) -> bool:
    """An amount under a millionth of a minor unit: the precision rule takes its digits for float
    noise."""
    units = iso4217_minor_units().get(currency)
    return units is not None and 0 < abs(amount) < 1e-6 * 10.0**-units


def below_minor_unit(amount: float, currency, usd: float) -> bool:
    """A positive amount smaller than one minor unit of its currency, or whose USD amount rounds to
    0."""
    if math.isnan(amount) or math.isinf(amount) or amount <= 0:
        return False
    units = iso4217_minor_units().get(currency) if currency is not None else None
    return (units is not None and amount < 10.0**-units * (1 - 1e-9)) or (
        not math.isnan(usd) and round(usd, 6) <= 0
    )


def expected_codes(df: pd.DataFrame) -> list[list[str]]:
    """Per raw row (by position), the codes it should fail, in HARD_RULES order."""
    iso, supported = set(iso4217_minor_units()), supported_currencies()
    records = df.to_dict("records")
    ids = [None if pd.isna(row["transaction_id"]) else row["transaction_id"] for row in records]
    keys = [content_key(row) for row in records]
    versions = content_versions(df)
    counts = Counter(t for t in ids if t is not None)
    seen: set[tuple] = set()
    expected = []
    for row, tid, key in zip(records, ids, keys, strict=False):
        amount, currency, ts, created = (
            row["amount"],
            row["currency"],
            row["timestamp"],
            row["customer_created_at"],
        )
        currency = None if pd.isna(currency) else currency
        has_amount, has_ts = not math.isnan(amount), not pd.isna(ts)
        conflicting = tid is not None and len(versions[tid]) > 1
        repeated = tid is not None and counts[tid] > 1 and not conflicting and (tid, key) in seen
        if tid is not None:
            seen.add((tid, key))
        usd = amount * usd_rate(currency, ts) if has_amount else math.nan
        fails = {
            "INVALID_ENCODING": not pd.isna(row["invalid_encoding"]),
            "MISSING_TRANSACTION_ID": tid is None,
            "MISSING_CUSTOMER_ID": pd.isna(row["customer_id"]),
            "MISSING_AMOUNT": not has_amount,
            "MISSING_TIMESTAMP": not has_ts,
            "MISSING_CURRENCY": currency is None,
            "NON_POSITIVE_AMOUNT": has_amount and amount <= 0,
            "NON_FINITE_AMOUNT": has_amount and math.isinf(amount),
            "AMOUNT_ABOVE_CEILING": usd > DEFAULT_MAX_AMOUNT_USD,
            "INVALID_TIMESTAMP": has_ts and ts < pd.Timestamp("2000-01-01", tz=UTC),
            "INVALID_CURRENCY": currency is not None and currency not in iso,
            "UNSUPPORTED_CURRENCY": currency in iso and currency not in supported,
            "PRECISION_MISMATCH": currency is not None
            and has_amount
            and too_many_decimals(amount, currency)
            and not below_float_noise(amount, currency),
            "BELOW_MINOR_UNIT": below_minor_unit(amount, currency, usd),
            "BEFORE_CUSTOMER_CREATED": has_ts and not pd.isna(created) and ts < created,
            "FUTURE_TIMESTAMP": has_ts and ts > NOW,
            "OUTSIDE_WEEK": has_ts and (ts < START or ts >= END),
            "CONFLICTING_DUPLICATE": conflicting,
            "DUPLICATE_TRANSACTION_ID": repeated,
            "DUPLICATE_ACROSS_WEEKS": False,  # no other loaded week here (the graph tests give one)
            "UNKNOWN_CUSTOMER": not pd.isna(row["customer_id"]) and not row["customer_exists"],
            "UNKNOWN_PRODUCT": not row["product_exists"],
        }
        assert set(fails) == set(RULE_CODES), "the oracle must know every hard rule"
        expected.append([code for code in RULE_CODES if fails[code]])
    return expected


def content_versions(df: pd.DataFrame) -> dict[str, set[tuple]]:
    """Per non-null transaction id, the distinct contents its rows hold."""
    versions: dict[str, set[tuple]] = {}
    for row in df.to_dict("records"):
        if not pd.isna(row["transaction_id"]):
            versions.setdefault(row["transaction_id"], set()).add(content_key(row))
    return versions


def conflicting_ids(df: pd.DataFrame) -> set[str]:
    return {tid for tid, contents in content_versions(df).items() if len(contents) > 1}


def quarantine_multiset(split) -> Counter:
    q = split.quarantined
    return Counter(
        zip(
            (None if pd.isna(t) else t for t in q["transaction_id"]),
            q["reason_codes"],
            strict=False,
        )
    )


def show(df: pd.DataFrame) -> None:
    """The whole falsifying week in hypothesis' report (the frame's repr elides columns)."""
    note(f"rows: {df.to_dict('records')!r}")


# --- properties
# ------------------------------------------------------------------------------------------------
# Each property is a function of the week and its split; the two tests share a split among several
# of them, since a split of a small week costs tens of milliseconds of pandas overhead, whatever its
# size.


def rows_are_conserved_with_their_reasons(
    df: pd.DataFrame, split, expected: list[list[str]]
) -> None:
    q = split.quarantined
    assert split.validated_count + len(q) == len(df)
    assert len(validated_rows(split)) == split.validated_count
    assert set(validated_rows(split).index).isdisjoint(q.index)
    assert set(validated_rows(split).index) | set(q.index) == set(df.index)
    for codes, primary in zip(q["reason_codes"], q["primary_reason"], strict=False):
        assert codes, "a quarantined row without a reason"
        parts = codes.split(";")
        assert set(parts) <= set(RULE_CODES), parts
        assert parts == sorted(parts, key=RULE_CODES.index) and len(set(parts)) == len(parts), parts
        assert parts[0] == primary
    # Against the oracle: a validated row fails no rule, a quarantined one exactly the rules it
    # breaks.
    reasons = dict(zip(q.index, q["reason_codes"], strict=False))
    validated = set(validated_rows(split).index)
    for label, codes in zip(df.index, expected, strict=False):
        if codes:
            assert reasons.get(label) == ";".join(codes), (label, reasons.get(label), codes)
        else:
            assert label in validated, (label, reasons.get(label))


def validated_rows_are_unique_finite_and_unconflicted(
    df: pd.DataFrame, split, expected: list[list[str]]
) -> None:
    v = validated_rows(split)
    assert v["transaction_id"].notna().all()
    assert not v["transaction_id"].duplicated().any()
    amounts_ = v["amount"].to_numpy(dtype=float)
    assert np.isfinite(amounts_).all() and (amounts_ > 0).all()
    assert "invalid_encoding" not in v.columns
    conflicting = conflicting_ids(df)
    assert set(v["transaction_id"]).isdisjoint(conflicting)
    # Identical copies of one id: the first is validated when the row breaks no other rule, none
    # otherwise.
    kept_by_id: dict[str, list] = {}
    for label, tid in zip(v.index, v["transaction_id"], strict=False):
        kept_by_id.setdefault(tid, []).append(label)
    copies: dict[str, list[int]] = {}
    for position, tid in enumerate(df["transaction_id"]):
        if not pd.isna(tid) and tid not in conflicting:
            copies.setdefault(tid, []).append(position)
    for tid, positions in copies.items():
        if len(positions) < 2:
            continue
        first = expected[positions[0]]
        clean = not [code for code in first if code != "DUPLICATE_TRANSACTION_ID"]
        kept = kept_by_id.get(tid, [])
        assert kept == ([df.index[positions[0]]] if clean else []), (tid, kept, first)


def splitting_is_deterministic_and_pure(df: pd.DataFrame, split) -> None:
    before = df.copy()
    again = split_by_hard_rules(df, WEEK)
    pd.testing.assert_frame_equal(df, before)  # the split never writes into the raw week
    np.testing.assert_array_equal(split.bad, again.bad)
    pd.testing.assert_frame_equal(split.failures, again.failures)
    pd.testing.assert_frame_equal(split.quarantined, again.quarantined)
    pd.testing.assert_frame_equal(validated_rows(split), validated_rows(again))
    pd.testing.assert_series_equal(split.amount_usd, again.amount_usd)


def row_order_does_not_matter(df: pd.DataFrame, split, data) -> None:
    order = data.draw(st.permutations(range(len(df))), label="order")
    shuffled = df.iloc[list(order)]
    if data.draw(st.booleans(), label="reset_index"):
        shuffled = shuffled.reset_index(drop=True)
    moved = split_by_hard_rules(shuffled, WEEK)
    assert set(validated_rows(moved)["transaction_id"]) == set(
        validated_rows(split)["transaction_id"]
    )
    assert moved.validated_count == split.validated_count
    assert quarantine_multiset(moved) == quarantine_multiset(split)


def validated_batches_are_the_whole_frame(df: pd.DataFrame, split, data) -> None:
    """However the raw week is sliced, the validated rows are the same: those that passed, in order,
    with the anomaly columns of the week as a whole (one slice of the whole week is the
    reference)."""
    rows = data.draw(st.integers(1, len(df) + 2), label="rows")
    # As the asset calls it (with the split's USD amounts), or as test_validation_rules does (from
    # the rows).
    if data.draw(st.booleans(), label="asset_usd"):
        outcome = detect_week_anomalies(
            df.loc[~split.bad, ANOMALY_INPUTS], amount_usd=split.amount_usd[~split.bad]
        )
    else:
        outcome = detect_week_anomalies(df.loc[~split.bad, ANOMALY_INPUTS])
    assert outcome.status == "ok", outcome.status
    parts = list(validated_batches(split, outcome, rows=rows))
    assert sum(len(p) for p in parts) == split.validated_count
    whole = next(validated_batches(split, outcome, rows=len(df) + 1))
    assert whole["transaction_id"].tolist() == validated_rows(split)["transaction_id"].tolist()
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)


@PROPERTY_SETTINGS
@given(df=dirty_weeks())
def test_every_row_is_validated_or_quarantined_for_its_reasons(df):
    """Row conservation, reason codes as the oracle gives them; validated ids unique, amounts finite
    and positive, no conflicting id validated, one of identical copies kept."""
    show(df)
    split = split_by_hard_rules(df, WEEK)
    expected = expected_codes(df)
    rows_are_conserved_with_their_reasons(df, split, expected)
    validated_rows_are_unique_finite_and_unconflicted(df, split, expected)


@PROPERTY_SETTINGS
@given(df=dirty_weeks(), data=st.data())
def test_the_split_is_deterministic_order_free_and_batched_as_a_whole(df, data):
    """Splitting twice gives the same; a permuted week gives the same validated ids and quarantine;
    the validated batches the asset writes are the whole validated frame with its anomaly
    columns."""
    show(df)
    split = split_by_hard_rules(df, WEEK)
    splitting_is_deterministic_and_pure(df, split)
    row_order_does_not_matter(df, split, data)
    validated_batches_are_the_whole_frame(df, split, data)


@PROPERTY_SETTINGS
@given(df=dirty_weeks(), data=st.data())
def test_a_week_read_in_batches_is_validated_as_the_whole_week(df, data):
    """The asset validates the week a batch at a time from its file (``validate_read``): whatever
    the batch size, the hard rules' outcome (each rule's failures, the quarantined rows and their
    reasons, the USD amounts), the anomalies and the validated rows are those of the week in one
    batch, duplicates across batches included."""
    show(df)
    rows = data.draw(st.integers(1, len(df) + 1), label="batch_rows")
    whole, batched = validate_week(df, WEEK), validate_week(df, WEEK, batch_rows=rows)
    assert batched.split.bad.tolist() == whole.split.bad.tolist()
    for part in ("failures", "quarantined", "fx"):
        pd.testing.assert_frame_equal(getattr(batched.split, part), getattr(whole.split, part))
    pd.testing.assert_series_equal(batched.anomalies.codes, whole.anomalies.codes)
    pd.testing.assert_frame_equal(batched.anomaly_table, whole.anomaly_table)
    pd.testing.assert_frame_equal(
        pd.concat(list(batched.batches()), ignore_index=True),
        pd.concat(list(whole.batches()), ignore_index=True),
    )
