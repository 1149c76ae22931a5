"""The datasets' Dagster types: pandera's outcome, with the cheap path for text columns."""

import pandas as pd
import pytest

from customer_assets.dagster_types import _passes_fast_check, frame_check
from customer_assets.schemas import RawTransactions
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
