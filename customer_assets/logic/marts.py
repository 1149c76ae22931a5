"""The marts' arithmetic that needs no warehouse: weekly cohorts of first purchases and their
retention. The marts' queries are ``sql/marts.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd


def cohorts(first_purchases: pd.DataFrame, week_start: pd.Timestamp) -> pd.DataFrame:
    """Per cohort (the Monday of the first purchase), its size and how many of it bought in the
    week starting ``week_start`` (naive UTC); ``first_purchases``: a row per customer,
    ``first_purchase_at`` and ``bought``."""
    first = pd.to_datetime(first_purchases["first_purchase_at"], utc=True).dt.tz_convert(None)
    cohort = first.dt.normalize() - pd.to_timedelta(first.dt.dayofweek, unit="D")
    bought = first_purchases["bought"].astype(bool)
    grouped = (
        pd.DataFrame({"cohort_week": cohort, "bought": bought})
        .groupby("cohort_week", sort=True)["bought"]
        .agg(cohort_size="size", retained="sum")
        .reset_index()
    )
    weeks_since = ((week_start - grouped["cohort_week"]) / pd.Timedelta(days=7)).astype("int64")
    size = grouped["cohort_size"]
    return pd.DataFrame(
        {
            "week_start": week_start,
            "cohort_week": grouped["cohort_week"].astype("datetime64[ns]"),
            "weeks_since_first_purchase": weeks_since,
            "cohort_size": size.astype("int64"),
            "retained": grouped["retained"].astype("int64"),
            "retention_rate": np.where(size > 0, grouped["retained"] / size, 0.0),
        }
    )
