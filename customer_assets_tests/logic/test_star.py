"""The calendar rows, with hand-computed expectations."""

import pandas as pd

from customer_assets.logic.star import dim_date_rows
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
