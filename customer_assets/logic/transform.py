"""Enrichment of validated transactions: USD amounts, time dimensions, customer and product metrics, segments."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from customer_assets.logic.currency import FX_SOURCE, convert_to_usd
from customer_assets.logic.validation import WeekContext

NEW_CUSTOMER_DAYS = 30
DORMANT_GAP_DAYS = 90
SMALL_USD, LARGE_USD = 50.0, 200.0

def add_usd_amounts(df: pd.DataFrame) -> pd.DataFrame:
    """``amount_usd`` at the ECB rate of the transaction date; the original amount and currency stay."""
    fx = convert_to_usd(df["amount"], df["currency"], df["timestamp"])
    missing = fx["amount_usd"].isna()
    if missing.any():
        codes = sorted(df.loc[missing, "currency"].astype(str).unique())
        raise ValueError(f"{int(missing.sum())} validated rows have no ECB rate for currencies {codes}; "
                         "validation should have quarantined them as UNSUPPORTED_CURRENCY")
    return df.assign(amount_usd=fx["amount_usd"].round(6), fx_rate=fx["fx_rate"],
                     fx_rate_date=fx["fx_rate_date"], fx_source=FX_SOURCE)


def add_time_dimensions(df: pd.DataFrame) -> pd.DataFrame:
    """Calendar attributes of the UTC timestamp."""
    ts = df["timestamp"].dt.tz_convert("UTC")
    return df.assign(
        day_of_week=ts.dt.day_name(),
        hour_of_day=ts.dt.hour.astype("int64"),
        is_weekend=ts.dt.dayofweek >= 5,
        week_number=ts.dt.isocalendar().week.astype("int64"),
        month=ts.dt.month.astype("int64"),
        quarter=ts.dt.quarter.astype("int64"),
    )


def add_customer_metrics(df: pd.DataFrame, history: pd.DataFrame, ctx: WeekContext) -> pd.DataFrame:
    """Lifetime value (USD), transaction count and days since first purchase, as of the week's end.

    ``history`` holds each customer's completed transactions up to the week's end (this week included);
    a customer missing from it falls back to this week's own rows, so no computed value is null.
    """
    week = df.groupby("customer_id").agg(week_value=("amount_usd", "sum"), week_count=("amount_usd", "size"),
                                         week_first=("timestamp", "min"))
    merged = week.join(history.set_index("customer_id"), how="left")
    ltv = merged["lifetime_value_usd"].fillna(merged["week_value"])
    count = merged["transaction_count"].fillna(merged["week_count"])
    first = merged["first_purchase_at"].fillna(merged["week_first"])
    week_end = pd.Timestamp(ctx.week_end)
    metrics = pd.DataFrame({
        "customer_lifetime_value": np.maximum(ltv, merged["week_value"]).round(2),
        "customer_transaction_count": np.maximum(count, merged["week_count"]).astype("int64"),
        "days_since_first_purchase": (week_end - first).dt.days.clip(lower=0).astype("int64"),
        "_last_before_week": merged["last_purchase_before_week"],
    })
    return df.join(metrics, on="customer_id")


def add_product_metrics(df: pd.DataFrame, category_prices: pd.DataFrame) -> pd.DataFrame:
    """Popularity rank by transactions in the week (1 = most) and the catalogue's average price per category."""
    counts = df.groupby("product_id")["transaction_id"].transform("size")
    rank = counts.rank(method="dense", ascending=False).astype("int64")
    prices = category_prices.set_index("category")["avg_price"]
    overall = float(category_prices["avg_price"].mean()) if len(category_prices) else 0.0
    avg = df["category"].map(prices).astype(float).fillna(overall)
    return df.assign(product_popularity_rank=rank, category_avg_price=avg.round(2))


def add_segments(df: pd.DataFrame, ctx: WeekContext) -> pd.DataFrame:
    """Transaction size by USD amount; customer lifecycle as of this week.

    new: first purchase under 30 days before the week's end; dormant: came back after more than 90 days
    without a purchase before this week; active: everyone else.
    """
    size = np.select([df["amount_usd"] < SMALL_USD, df["amount_usd"] <= LARGE_USD], ["small", "medium"], "large")
    gap_days = (pd.Timestamp(ctx.week_start) - df["_last_before_week"]).dt.days
    lifecycle = np.select([df["days_since_first_purchase"] < NEW_CUSTOMER_DAYS, gap_days > DORMANT_GAP_DAYS],
                          ["new", "dormant"], "active")
    return df.assign(transaction_size=size, customer_lifecycle=lifecycle).drop(columns=["_last_before_week"])


CUSTOMER_COLUMNS = ["customer_lifetime_value", "customer_transaction_count", "days_since_first_purchase"]
PRODUCT_COLUMNS = ["product_popularity_rank", "category_avg_price"]


def transform_week(validated: pd.DataFrame, history: pd.DataFrame | Callable[[], pd.DataFrame],
                   category_prices: pd.DataFrame, ctx: WeekContext) -> pd.DataFrame:
    """All enrichment steps for one validated week.

    ``history`` may be a function returning it: it is called only once the steps that do not need it are
    done, so that the history query can run on the database meanwhile.
    """
    df = add_usd_amounts(validated)
    df = add_time_dimensions(df)
    df = add_product_metrics(df, category_prices)
    df = add_customer_metrics(df, history() if callable(history) else history, ctx)
    df = add_segments(df, ctx)
    df["week_start"] = pd.Timestamp(ctx.week_start).tz_convert(None)
    columns = [c for c in df.columns if c not in PRODUCT_COLUMNS]
    at = columns.index(CUSTOMER_COLUMNS[-1]) + 1  # product metrics after the customer's, as documented
    return df[columns[:at] + PRODUCT_COLUMNS + columns[at:]].reset_index(drop=True)
