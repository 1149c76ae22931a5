"""The datasets' Dagster types: pandera's outcome, with the cheap path for text columns."""

import pandas as pd
import pyarrow as pa
import pytest

from customer_assets.dagster_types import (
    ModelViolation,
    _passes_fast_check,
    arrow_check,
    frame_check,
)
from customer_assets.schemas import RawTransactions, ValidatedTransactions
from customer_assets_tests.support.frames import raw_frame, raw_row


def test_checking_a_frame_never_changes_it():
    """Type checks validate a Copy-on-Write view "in place" (no deep copy of each output): what
    pandera coerces there must not reach the frame that is written."""
    df = raw_frame(raw_row(), raw_row(transaction_id="X"))
    # the model coerces this to float64 while checking
    df["amount"] = df["amount"].astype("float32")
    before = df.copy()
    frame_check(RawTransactions)(df)
    pd.testing.assert_frame_equal(df, before)


def test_the_fast_type_check_decides_as_pandera_does():
    """The cheap check compares dtypes without coercing; a frame it rejects goes to pandera's full
    check, so a frame whose types only coerce to the model's still passes, and one that cannot
    coerce still fails."""
    import pandera.pandas as pandera

    check, fast = frame_check(RawTransactions), _passes_fast_check(RawTransactions)
    exact = raw_frame(raw_row(), raw_row(transaction_id="X"))
    assert fast(exact)  # the cheap check decides a frame the assets produce
    check(exact)
    coercible = exact.assign(
        amount=exact["amount"].astype("float32"),
        timestamp=exact["timestamp"].dt.tz_convert("Europe/Paris"),
    )
    assert not fast(coercible)  # ... and leaves this one to pandera's full check, which passes it
    check(coercible)
    with pytest.raises(pandera.errors.SchemaErrors, match="amount"):
        check(exact.assign(amount=["ten", "eleven"]))


def _batch(frame: pd.DataFrame) -> pa.RecordBatch:
    return pa.RecordBatch.from_pandas(frame, preserve_index=False)


@pytest.mark.parametrize(
    "column",
    [n for n, c in RawTransactions.to_schema().columns.items() if not c.nullable],
)
def test_an_arrow_batch_is_checked_as_its_frame_would_be(column):
    """The extract checks each streamed block on Arrow (``arrow_check``): for every column the model
    says takes no null, a null there is a ModelViolation naming the column and the transaction (as
    pandas, pandera would coerce a null ``bool`` to False and pass it); a clean block passes."""
    check = arrow_check(RawTransactions)
    clean = raw_frame(raw_row(), raw_row(transaction_id="T2"))
    check(_batch(clean))
    broken = _batch(clean.astype({column: object}).assign(**{column: [None, clean[column][1]]}))
    with pytest.raises(ModelViolation, match=rf"{column}.*'T1'"):
        check(broken)


def test_an_arrow_batch_missing_a_column_or_breaking_a_value_check_is_refused():
    check_raw = arrow_check(RawTransactions)
    with pytest.raises(ModelViolation, match="product_exists"):
        check_raw(_batch(raw_frame(raw_row()).drop(columns=["product_exists"])))
    # a model with value checks: every batch decided by pandera on pandas
    validated = (
        raw_frame(raw_row())
        .drop(columns=["invalid_encoding"])
        .assign(
            is_anomaly=False,
            anomaly_flags="",
            amount_usd=0.0,
            fx_rate=1.0,
            fx_rate_date=pd.Timestamp("2026-11-16"),
        )
    )
    with pytest.raises(ModelViolation, match="amount_usd: greater_than"):
        arrow_check(ValidatedTransactions)(_batch(validated))
