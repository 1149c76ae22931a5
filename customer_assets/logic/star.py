"""The analysts' star schema: the calendar, and the transaction facts keyed to the dimension rows of their time.

The fact rows are found by one query that runs unchanged in DuckDB and BigQuery (``WarehouseSQL``): each
loaded transaction of the week with how many versions of its customer, its product and its day match it.
Exactly one of each makes a fact row; none or several quarantine it with a reason, so nothing is dropped.
"""

from __future__ import annotations

from datetime import datetime

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
    return pd.DataFrame({
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
    })


def _day_key(column: str) -> str:
    return f"(EXTRACT(YEAR FROM {column}) * 10000 + EXTRACT(MONTH FROM {column}) * 100 + EXTRACT(DAY FROM {column}))"


# Each transaction of the week joined to the dimension rows valid at its time. Its customer is the person its
# shop id belongs to in the week's identity (customer_identity_map); a customer version matches when the
# transaction's week lies in [effective_from, effective_to): versions change at week boundaries. A key that matches several rows
# repeats the transaction (resolve_keys finds it); one that matches none leaves the key NULL.
FACT_SQL = f"""
SELECT t.transaction_id, c.customer_key, p.product_key, {_day_key("t.{ts}")} AS date_key,
       COALESCE(i.customer_id, TRIM(t.customer_id)) AS customer_id, t.product_id, t.{{ts}}, t.week_start, t.amount, t.currency,
       t.amount_usd, t.fx_rate, t.fx_rate_date, t.is_anomaly, t.anomaly_flags, d.date_key AS matched_date_key
FROM {{transactions}} t
  LEFT JOIN {{identity}} i ON i.week_start = t.week_start AND i.source = 'database'
    AND i.source_customer_id = TRIM(t.customer_id)
  LEFT JOIN {{dim_customers}} c ON c.customer_id = i.customer_id
    AND c.effective_from <= t.week_start AND t.week_start < c.effective_to
  LEFT JOIN {{dim_products}} p ON p.product_id = t.product_id
    AND p.effective_from <= t.week_start AND t.week_start < p.effective_to
  LEFT JOIN {{dim_date}} d ON d.date_key = {_day_key("t.{ts}")}
WHERE t.week_start = @week_start
"""

FACT_COLUMNS = ["transaction_id", "customer_key", "product_key", "date_key", "customer_id", "product_id", "timestamp",
                "week_start", "amount", "currency", "amount_usd", "fx_rate", "fx_rate_date", "is_anomaly",
                "anomaly_flags"]
QUARANTINE_COLUMNS = ["transaction_id", "customer_id", "product_id", "timestamp", "week_start", "amount_usd",
                      "reason_codes"]
_KEYS = {"customer_key": "CUSTOMER_VERSION", "product_key": "PRODUCT_VERSION", "matched_date_key": "DATE"}


def resolve_keys(candidates: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the week's candidates (``FACT_SQL``'s rows) into fact rows (one match per key) and quarantined
    rows with their reasons (``NO_<KEY>``: no match; ``AMBIGUOUS_<KEY>``: several), one row per transaction."""
    if candidates["transaction_id"].duplicated().any():  # some key matched several rows
        matches = candidates.groupby("transaction_id", sort=False)[list(_KEYS)].nunique()
        candidates = candidates.drop_duplicates("transaction_id").reset_index(drop=True)
        matches = matches.loc[candidates["transaction_id"]].reset_index(drop=True)
    else:
        matches = candidates[list(_KEYS)].notna().astype("int64")
    reasons = pd.Series("", index=candidates.index, dtype="object")
    for column, name in _KEYS.items():
        for bad, prefix in ((matches[column] == 0, "NO_"), (matches[column] > 1, "AMBIGUOUS_")):
            reasons[bad] = reasons[bad].where(reasons[bad] == "", reasons[bad] + ";") + prefix + name
    bad = (reasons != "").to_numpy()
    facts = candidates.loc[~bad, FACT_COLUMNS].reset_index(drop=True)
    quarantined = candidates.loc[bad].assign(reason_codes=reasons[bad].astype(str))[QUARANTINE_COLUMNS]
    return facts, quarantined.reset_index(drop=True)


def fact_candidates(warehouse, schema: str, week: WeekContext) -> pd.DataFrame:
    """The week's loaded transactions with their dimension matches (see ``FACT_SQL``)."""
    names = {name: warehouse.table(schema, name) for name in
             ("dim_customers", "dim_products", "dim_date", "customer_identity_map")}
    names["identity"] = names.pop("customer_identity_map")
    names["transactions"] = warehouse.table(schema, "weekly_transactions")
    names["ts"] = warehouse.quote("timestamp")
    rows = warehouse.query(FACT_SQL, {"week_start": _naive(week.week_start)}, **names)
    # Nanosecond timestamps, as the models have them (engines hand back microseconds): the type check then
    # takes its cheap path instead of pandera's full one.
    for column, dtype in rows.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            rows[column] = rows[column].astype("datetime64[ns, UTC]" if getattr(dtype, "tz", None) else "datetime64[ns]")
    return rows


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)



def kept_snapshot(warehouse, schema: str, week_start: datetime) -> pd.DataFrame:
    """The product catalogue stored for the week (empty when the week has none yet), typed as the model."""
    from customer_assets.schemas import ProductSnapshots

    columns = list(ProductSnapshots.to_schema().columns)
    if not warehouse.exists(schema, "product_snapshots"):
        return pd.DataFrame(columns=columns)
    rows = warehouse.query("SELECT * FROM {table} WHERE week_start = @week_start ORDER BY product_id",
                           {"week_start": week_start}, table=warehouse.table(schema, "product_snapshots"))
    return ProductSnapshots.validate(rows[columns], lazy=True) if len(rows) else rows[columns]
