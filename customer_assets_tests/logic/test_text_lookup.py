"""``is_in``: pandas' ``isin`` for text through Arrow's hash lookup, whatever holds the values.
pandas 2.3 builds the set for Arrow-backed text value by value in Python, which took 16 s for the
3M customers of a 10M-row week; every text membership test over ids goes through ``is_in``."""

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_assets.logic.identity import is_in

TEXT = st.text(alphabet=st.sampled_from(["a", "A", "é", "\x00", " ", "1", "😀"]), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    column=st.lists(st.one_of(st.none(), TEXT), max_size=12),
    values=st.lists(TEXT, max_size=12),
    holder=st.sampled_from(["list", "set", "series", "array", "index", "numpy"]),
)
def test_is_in_answers_as_isin_for_any_holder_of_the_values(column, values, holder):
    series = pd.Series(column, dtype="str")
    held = {
        "list": values,
        "set": set(values),
        "series": pd.Series(values, dtype="str"),
        "array": pd.Series(values, dtype="str").array,
        "index": pd.Index(values, dtype=object),
        "numpy": pd.Series(values, dtype=object).to_numpy(),
    }[holder]
    expected = series.isin(values).to_numpy()
    assert is_in(series, held).tolist() == expected.tolist()
