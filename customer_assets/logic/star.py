"""The analysts' star schema: the calendar, and the transaction facts keyed to the dimension rows of
their time.

The warehouse finds each loaded transaction of the week with how many versions of its customer, its
product and its day match it (``sql/star.py``). Exactly one of each makes a fact row; none or
several quarantine it with a reason, so nothing is dropped.
"""

from __future__ import annotations

import pandas as pd

from customer_assets.weeks import WeekContext


def date_key(day) -> int:
    """yyyymmdd of a day."""
    return day.year * 10000 + day.month * 100 + day.day


def dim_date_rows(week: WeekContext) -> pd.DataFrame:
    """The calendar rows of the week's seven days (UTC): keys, calendar and ISO-week attributes."""
    start = pd.Timestamp(week.week_start).tz_convert(None)
    days = pd.date_range(start, periods=7, freq="D")
    iso = days.isocalendar()
    return pd.DataFrame(
        {
            "date_key": [date_key(d) for d in days],
            "date": days,
            "year": days.year.astype("int64"),
            "quarter": days.quarter.astype("int64"),
            "month": days.month.astype("int64"),
            "month_name": days.month_name(),
            "day_of_month": days.day.astype("int64"),
            "day_of_week": (days.dayofweek + 1).astype("int64"),
            "day_name": days.day_name(),
            "is_weekend": days.dayofweek >= 5,
            "iso_year": iso["year"].astype("int64").to_numpy(),
            "iso_week": iso["week"].astype("int64").to_numpy(),
            "week_start": start,
        }
    )


FACT_COLUMNS = [
    "transaction_id",
    "customer_key",
    "product_key",
    "date_key",
    "customer_id",
    "product_id",
    "timestamp",
    "week_start",
    "amount",
    "currency",
    "amount_usd",
    "fx_rate",
    "fx_rate_date",
    "is_anomaly",
    "anomaly_flags",
]
QUARANTINE_COLUMNS = [
    "transaction_id",
    "customer_id",
    "product_id",
    "timestamp",
    "week_start",
    "amount_usd",
    "reason_codes",
]
_KEYS = {
    "customer_key": "CUSTOMER_VERSION",
    "product_key": "PRODUCT_VERSION",
    "matched_date_key": "DATE",
}


def resolve_keys(candidates: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the week's candidates (the rows of ``sql/star.py``'s ``FACT_SQL``) into fact rows (one
    match per key) and quarantined rows with their reasons (``NO_<KEY>``: no match;
    ``AMBIGUOUS_<KEY>``: several), one row per transaction."""
    if candidates["transaction_id"].duplicated().any():  # some key matched several rows
        matches = candidates.groupby("transaction_id", sort=False)[list(_KEYS)].nunique()
        candidates = candidates.drop_duplicates("transaction_id").reset_index(drop=True)
        matches = matches.loc[candidates["transaction_id"]].reset_index(drop=True)
    else:
        matches = candidates[list(_KEYS)].notna().astype("int64")
    reasons = pd.Series("", index=candidates.index, dtype="object")
    for column, name in _KEYS.items():
        for bad, prefix in ((matches[column] == 0, "NO_"), (matches[column] > 1, "AMBIGUOUS_")):
            reasons[bad] = (
                reasons[bad].where(reasons[bad] == "", reasons[bad] + ";") + prefix + name
            )
    bad = (reasons != "").to_numpy()
    facts = candidates.loc[~bad, FACT_COLUMNS].reset_index(drop=True)
    quarantined = candidates.loc[bad].assign(reason_codes=reasons[bad].astype(str))[
        QUARANTINE_COLUMNS
    ]
    return facts, quarantined.reset_index(drop=True)
