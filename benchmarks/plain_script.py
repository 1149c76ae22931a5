"""One week as a plain pandas script, the way the old hand-run workflow did it: ``python -m
benchmarks.plain_script``.

The end-to-end reference for the project's transaction branch (extract, validation, customer
history, transform, warehouse load), written as a team would write it by hand. It does not import
``customer_assets``; its two queries are copies of the project's SQL text (``WEEK_EXTRACT_SQL``,
``CUSTOMER_HISTORY_SQL``).

1. extract: ``pandas.read_sql`` through SQLAlchemy in 10,000-row chunks, concatenated (never email,
   phone or address);
2. checks: every row gets its first failing reason or none, and is kept or quarantined;
3. USD at the ECB rate of the transaction date (``CurrencyConverter``, one call per (currency, day)
   pair);
4. customer metrics from the history query (per customer and currency, at the week's last day's
   rate);
5. time dimensions and segments;
6. delete-and-insert of the week into DuckDB (validated and quarantined tables).

Prints one JSON object: seconds (after imports), seconds per phase, rows, peak RSS (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psycopg2
import sqlalchemy
from currency_converter import CurrencyConverter
from iso4217 import Currency

CHUNKSIZE = 10_000
NEW_CUSTOMER_DAYS, DORMANT_GAP_DAYS = 30, 90
SMALL_USD, LARGE_USD = 50.0, 200.0

# A copy of benchmarks.probes.WEEK_EXTRACT_SQL: no email, phone or address.
WEEK_SQL = """
SELECT t.transaction_id, t.customer_id, c.country, c.segment, t.amount::float8 AS amount, t.currency,
       t."timestamp" AT TIME ZONE 'UTC' AS "timestamp", t.product_id, p.name AS product_name, p.category,
       c.created_at AT TIME ZONE 'UTC' AS customer_created_at,
       c.customer_id IS NOT NULL AS customer_exists, p.product_id IS NOT NULL AS product_exists
FROM transactions t
LEFT JOIN customers c ON c.customer_id = t.customer_id
LEFT JOIN products p ON p.product_id = t.product_id
WHERE t.status = 'completed' AND t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
"""

# A copy of customer_assets.sources.extract.CUSTOMER_HISTORY_SQL: per customer and currency, all
# history.
HISTORY_SQL = """
SELECT customer_id, currency,
       sum(amount::float8) AS amount,
       count(*) AS transaction_count,
       extract(epoch FROM min("timestamp"))::float8 AS first_purchase_at,
       extract(epoch FROM max("timestamp") FILTER (WHERE "timestamp" < %(start)s))::float8
           AS last_purchase_before_week
FROM transactions
WHERE status = 'completed' AND "timestamp" < %(end)s AND amount > 0 AND customer_id IS NOT NULL
GROUP BY customer_id, currency
"""


def peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def extract(engine, start: datetime, end: datetime) -> pd.DataFrame:
    """The week's completed transactions, read in 10,000-row chunks and concatenated."""
    with engine.connect() as con:
        chunks = pd.read_sql(
            WEEK_SQL, con, params={"start": start, "end": end}, chunksize=CHUNKSIZE
        )
        return pd.concat(list(chunks), ignore_index=True)


def reasons(
    df: pd.DataFrame, start: datetime, end: datetime, converter: CurrencyConverter
) -> np.ndarray:
    """Per row, the first check it fails ('' where it passes them all)."""
    iso = {c.code for c in Currency}
    ts = df["timestamp"]
    first_copy = df.sort_values("timestamp", kind="stable")["transaction_id"]
    duplicate = (first_copy.duplicated() & first_copy.notna()).reindex(df.index)
    checks = {
        "MISSING_TRANSACTION_ID": df["transaction_id"].isna(),
        "MISSING_CUSTOMER_ID": df["customer_id"].isna(),
        "MISSING_AMOUNT": df["amount"].isna(),
        "MISSING_TIMESTAMP": ts.isna(),
        "MISSING_CURRENCY": df["currency"].isna(),
        "NON_POSITIVE_AMOUNT": df["amount"] <= 0,
        "INVALID_CURRENCY": df["currency"].notna() & ~df["currency"].isin(iso),
        "NO_ECB_RATE": df["currency"].isin(iso) & ~df["currency"].isin(converter.currencies),
        "DUPLICATE_TRANSACTION_ID": duplicate,
        "UNKNOWN_CUSTOMER": df["customer_id"].notna() & ~df["customer_exists"].astype(bool),
        "UNKNOWN_PRODUCT": ~df["product_exists"].astype(bool),
        "OUTSIDE_WEEK": ts.notna()
        & ((ts < start.replace(tzinfo=None)) | (ts >= end.replace(tzinfo=None))),
    }
    return np.select(
        [c.fillna(False).to_numpy(bool) for c in checks.values()], list(checks), default=""
    )


def usd_per_unit(
    converter: CurrencyConverter, currencies: pd.Series, days: pd.Series
) -> np.ndarray:
    """USD per unit of each row's currency on its day: one converter call per distinct (currency,
    day)."""
    rows = pd.DataFrame({"currency": currencies.to_numpy(), "day": days.to_numpy()})
    pairs = rows.drop_duplicates().reset_index(drop=True)
    pairs["rate"] = [
        converter.convert(1.0, c, "USD", date=pd.Timestamp(d).date())
        for c, d in zip(pairs["currency"], pairs["day"], strict=False)
    ]
    return rows.merge(pairs, on=["currency", "day"], how="left")["rate"].to_numpy()


def customer_metrics(
    engine, start: datetime, end: datetime, converter: CurrencyConverter
) -> pd.DataFrame:
    """Lifetime value (USD at the week's last day), count, first purchase and last purchase before
    the week."""
    with engine.connect() as con:
        history = pd.read_sql(HISTORY_SQL, con, params={"start": start, "end": end})
    closing_day = (end - timedelta(days=1)).date()
    rates = {
        c: converter.convert(1.0, c, "USD", date=closing_day)
        for c in history["currency"].unique()
        if c in converter.currencies
    }
    history["usd"] = history["amount"] * history["currency"].map(rates)
    metrics = (
        history.dropna(subset=["usd"])
        .groupby("customer_id")
        .agg(
            customer_lifetime_value=("usd", "sum"),
            customer_transaction_count=("transaction_count", "sum"),
            first_purchase_at=("first_purchase_at", "min"),
            last_purchase_before_week=("last_purchase_before_week", "max"),
        )
    )
    for column in ("first_purchase_at", "last_purchase_before_week"):
        metrics[column] = pd.to_datetime(metrics[column], unit="s")
    return metrics


def enrich(
    week: pd.DataFrame,
    metrics: pd.DataFrame,
    start: datetime,
    end: datetime,
    converter: CurrencyConverter,
) -> pd.DataFrame:
    """The validated rows with ``amount_usd``, customer metrics, time dimensions and segments."""
    ts = week["timestamp"]
    week = week.assign(
        amount_usd=week["amount"] * usd_per_unit(converter, week["currency"], ts.dt.normalize())
    )
    week = week.join(metrics, on="customer_id")
    week_start, week_end = (
        pd.Timestamp(start).tz_localize(None),
        pd.Timestamp(end).tz_localize(None),
    )
    first = week["first_purchase_at"].fillna(ts)
    week["days_since_first_purchase"] = (week_end - first).dt.days.clip(lower=0)
    gap_days = (week_start - week["last_purchase_before_week"]).dt.days
    return week.assign(
        day_of_week=ts.dt.day_name(),
        hour_of_day=ts.dt.hour,
        is_weekend=ts.dt.dayofweek >= 5,
        month=ts.dt.month,
        quarter=ts.dt.quarter,
        transaction_size=np.select(
            [week["amount_usd"] < SMALL_USD, week["amount_usd"] <= LARGE_USD],
            ["small", "medium"],
            "large",
        ),
        customer_lifecycle=np.select(
            [week["days_since_first_purchase"] < NEW_CUSTOMER_DAYS, gap_days > DORMANT_GAP_DAYS],
            ["new", "dormant"],
            "active",
        ),
    )


def load(path: Path, tables: dict[str, pd.DataFrame], week_start: datetime) -> None:
    """Replace the week's rows of each table in one DuckDB transaction."""
    key = pd.Timestamp(week_start).tz_localize(None)
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        for name, frame in tables.items():
            con.register("frame", frame.assign(week_start=key))
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM frame LIMIT 0")
            con.execute(f"DELETE FROM {name} WHERE week_start = ?", [key])
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM frame")
            con.unregister("frame")
        con.execute("COMMIT")
    finally:
        con.close()


def run_week(dsn: str, week: str, warehouse: Path) -> dict:
    """The whole week; returns rows and seconds per phase."""
    start = datetime.combine(date.fromisoformat(week), datetime.min.time(), timezone.utc)
    end = start + timedelta(days=7)
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn)
    )
    converter = CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)
    lap("rates")
    raw = extract(engine, start, end)
    lap("extract")
    reason = reasons(raw, start, end, converter)
    validated, quarantined = (
        raw[reason == ""],
        raw[reason != ""].assign(reason=reason[reason != ""]),
    )
    lap("checks")
    metrics = customer_metrics(engine, start, end, converter)
    lap("history")
    enriched = enrich(validated, metrics, start, end, converter)
    lap("enrich")
    load(
        warehouse, {"weekly_transactions": enriched, "quarantined_transactions": quarantined}, start
    )
    lap("load")
    engine.dispose()
    return {
        "rows": len(raw),
        "validated": len(validated),
        "quarantined": len(quarantined),
        "quarantined_by_reason": quarantined["reason"].value_counts().to_dict(),
        "phases": phases,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--week", required=True, help="the week's Monday, e.g. 2026-11-16")
    p.add_argument(
        "--warehouse", type=Path, required=True, help="DuckDB file the week is loaded into"
    )
    a = p.parse_args(argv)
    a.warehouse.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_week(a.dsn, a.week, a.warehouse)
    json.dump(
        {
            "kind": "plain_script",
            "week": a.week,
            "seconds": time.perf_counter() - started,
            **result,
            "peak_rss_mb": peak_rss_mb(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
