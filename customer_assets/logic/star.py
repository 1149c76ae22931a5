"""The analysts' star schema: the calendar. The transaction facts, keyed to the dimension rows of
their time, are resolved in the warehouse (``sql/star.py``)."""

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
