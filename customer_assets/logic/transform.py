"""Enrichment of validated transactions: USD amounts, time dimensions, customer and product metrics,
segments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from customer_assets.logic.currency import FX_SOURCE
from customer_assets.logic.duckdb_memory import connect
from customer_assets.weeks import WeekContext

NEW_CUSTOMER_DAYS = 30
DORMANT_GAP_DAYS = 90
# transaction_size: fixed USD bands, as seed 000 sets them (small < $50 <= medium <= $200 < large).
SMALL_USD, LARGE_USD = 50.0, 200.0


def add_fx_source(df: pd.DataFrame) -> pd.DataFrame:
    """Where the validated rows' ``amount_usd`` (converted by validation, at the ECB rate of the
    transaction date) comes from; a row without it is a validation bug, not data to load."""
    missing = df["amount_usd"].isna()
    if missing.any():
        codes = sorted(df.loc[missing, "currency"].astype(str).unique())
        raise ValueError(
            f"{int(missing.sum())} validated rows have no ECB rate for currencies {codes}; "
            "validation should have quarantined them as UNSUPPORTED_CURRENCY"
        )
    return df.assign(fx_source=FX_SOURCE)


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


# The week-wide figures of the enrichment, computed by DuckDB over the week's validated rows (the
# step's file, or a frame: ``week_figures``), so that the week never has to be a DataFrame. One thread
# (``duckdb_memory.connect``) adds each group's amounts in row order, and ``fsum`` gives the double
# nearest their exact sum: a rerun gives the same bits.
CUSTOMER_WEEK_SQL = """
SELECT customer_id, fsum(amount_usd) AS week_value, count(*) AS week_count,
       min("timestamp") AS week_first
FROM week WHERE customer_id IS NOT NULL GROUP BY customer_id
"""
PRODUCT_WEEK_SQL = """
SELECT product_id, count(*) AS transactions FROM week WHERE product_id IS NOT NULL GROUP BY product_id
"""


@dataclass(frozen=True)
class WeekFigures:
    """Per customer of the week, its amount in USD, transactions and first purchase
    (``CUSTOMER_WEEK_SQL``); per product, its transactions (``PRODUCT_WEEK_SQL``)."""

    customers: pd.DataFrame
    products: pd.DataFrame

    @classmethod
    def by(cls, query: Callable[[str], pd.DataFrame]) -> WeekFigures:
        """The figures of the week's rows that ``query`` runs the SQL over (as the relation
        ``week``)."""
        return cls(*(query(sql) for sql in (CUSTOMER_WEEK_SQL, PRODUCT_WEEK_SQL)))


def week_figures(week: pd.DataFrame) -> WeekFigures:
    """``WeekFigures`` of a frame of validated rows, by the same SQL as over the week's file."""
    with connect() as con:
        con.register("week", pa.Table.from_pandas(week, preserve_index=False))
        return WeekFigures.by(lambda sql: con.sql(sql).to_arrow_table().to_pandas())


def customer_metrics(
    totals: pd.DataFrame, history: pd.DataFrame, span: WeekContext
) -> pd.DataFrame:
    """Per customer of the week: lifetime value (USD), transaction count and days since first
    purchase, as of the week's end, and the last purchase before the week (for the lifecycle
    segment).

    ``totals`` are the week's figures per customer (``WeekFigures.customers``); ``history`` each
    customer's completed transactions up to the week's end (this week included). A customer missing
    from the history falls back to this week's own rows, so no computed value is null.
    """
    merged = totals.set_index("customer_id").join(history.set_index("customer_id"), how="left")
    ltv = merged["lifetime_value_usd"].fillna(merged["week_value"])
    count = merged["transaction_count"].fillna(merged["week_count"])
    first = merged["first_purchase_at"].fillna(merged["week_first"])
    week_end = pd.Timestamp(span.week_end)
    return pd.DataFrame(
        {
            "customer_lifetime_value": np.maximum(ltv, merged["week_value"]).round(2),
            "customer_transaction_count": np.maximum(count, merged["week_count"]).astype("int64"),
            "days_since_first_purchase": (week_end - first).dt.days.clip(lower=0).astype("int64"),
            "_last_before_week": merged["last_purchase_before_week"],
        }
    )


def product_ranks(products: pd.DataFrame) -> pd.Series:
    """Per product of the week (``WeekFigures.products``), its popularity rank by transactions
    (1 = most; ties share a rank)."""
    counts = products.set_index("product_id")["transactions"]
    return counts.rank(method="dense", ascending=False).astype("int64")


def customer_lookup(metrics: pd.DataFrame) -> pd.DataFrame:
    """``customer_metrics`` indexed by ids held as Python text: the index's hash table is built on
    the first lookup and kept, where a join would factorize the week's customers again for every
    batch (0.6 s a batch at 3M customers)."""
    return metrics.set_axis(pd.Index(metrics.index.to_numpy(dtype=object), name=metrics.index.name))


def add_customer_metrics(df: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Each row with its customer's metrics (``customer_lookup``'s, or ``customer_metrics``'), as a
    left join on ``customer_id`` gives them."""
    found = metrics.reindex(df["customer_id"].to_numpy(dtype=object))
    return pd.concat([df, found.set_axis(df.index)], axis=1)


def add_product_metrics(
    df: pd.DataFrame, ranks: pd.Series, category_prices: pd.DataFrame
) -> pd.DataFrame:
    """Popularity rank by transactions in the week and the catalogue's average price per
    category."""
    prices = category_prices.set_index("category")["avg_price"]
    overall = float(category_prices["avg_price"].mean()) if len(category_prices) else 0.0
    avg = df["category"].map(prices).astype(float).fillna(overall)
    rank = df["product_id"].map(ranks)
    if rank.isna().any():
        raise ValueError(f"{int(rank.isna().sum())} validated rows have no product_id to rank")
    return df.assign(product_popularity_rank=rank.astype("int64"), category_avg_price=avg.round(2))


def add_segments(df: pd.DataFrame, span: WeekContext) -> pd.DataFrame:
    """Transaction size by USD amount; customer lifecycle as of this week.

    new: first purchase under 30 days before the week's end; dormant: came back after more than 90
    days without a purchase before this week; active: everyone else.
    """
    size = np.select(
        [df["amount_usd"] < SMALL_USD, df["amount_usd"] <= LARGE_USD], ["small", "medium"], "large"
    )
    gap_days = (pd.Timestamp(span.week_start) - df["_last_before_week"]).dt.days
    lifecycle = np.select(
        [df["days_since_first_purchase"] < NEW_CUSTOMER_DAYS, gap_days > DORMANT_GAP_DAYS],
        ["new", "dormant"],
        "active",
    )
    return df.assign(transaction_size=size, customer_lifecycle=lifecycle).drop(
        columns=["_last_before_week"]
    )


CUSTOMER_COLUMNS = [
    "customer_lifetime_value",
    "customer_transaction_count",
    "days_since_first_purchase",
]
PRODUCT_COLUMNS = ["product_popularity_rank", "category_avg_price"]


@dataclass(frozen=True)
class WeekMetrics:
    """What enriching a row needs from the whole week: per-customer and per-product figures."""

    customers: pd.DataFrame  # indexed by customer_id, CUSTOMER_COLUMNS + _last_before_week
    product_ranks: pd.Series  # indexed by product_id
    category_prices: pd.DataFrame


def week_metrics(
    figures: WeekFigures, history: pd.DataFrame, category_prices: pd.DataFrame, span: WeekContext
) -> WeekMetrics:
    """The week-wide figures each row is enriched with, from the week's ``WeekFigures``."""
    customers = customer_lookup(customer_metrics(figures.customers, history, span))
    return WeekMetrics(
        customers=customers,
        product_ranks=product_ranks(figures.products),
        category_prices=category_prices,
    )


def enrich(rows: pd.DataFrame, metrics: WeekMetrics, span: WeekContext) -> pd.DataFrame:
    """All enrichment steps for some of the week's validated rows (any batch of them: each row needs
    only itself and the week's metrics)."""
    df = add_fx_source(rows)
    df = add_time_dimensions(df)
    df = add_product_metrics(df, metrics.product_ranks, metrics.category_prices)
    df = add_customer_metrics(df, metrics.customers)
    df = add_segments(df, span)
    df["week_start"] = pd.Timestamp(span.week_start).tz_convert(None)
    columns = [c for c in df.columns if c not in PRODUCT_COLUMNS]
    # product metrics after the customer's, as documented
    at = columns.index(CUSTOMER_COLUMNS[-1]) + 1
    return df[columns[:at] + PRODUCT_COLUMNS + columns[at:]].reset_index(drop=True)


class EnrichedTotals:
    """Figures of the enriched week summed over its batches as they are written (the output's
    metadata)."""

    def __init__(self):
        self.amount_usd = 0.0
        self.latest_rate: pd.Timestamp | None = None
        self.sizes: dict[str, int] = {}
        self.lifecycles: dict[str, int] = {}

    def add(self, df: pd.DataFrame) -> None:
        self.amount_usd += float(df["amount_usd"].sum())
        if len(df):
            latest = df["fx_rate_date"].max()
            self.latest_rate = latest if self.latest_rate is None else max(self.latest_rate, latest)
        for counts, column in (
            (self.sizes, "transaction_size"),
            (self.lifecycles, "customer_lifecycle"),
        ):
            for key, n in df[column].value_counts().items():
                counts[key] = counts.get(key, 0) + int(n)

    def as_dict(self) -> dict:
        return {
            "amount_usd_total": round(self.amount_usd, 2),
            "fx_latest_rate_date": str(self.latest_rate.date())
            if self.latest_rate is not None
            else "",
            "segments": dict(self.sizes),
            "customer_lifecycle": dict(self.lifecycles),
        }
