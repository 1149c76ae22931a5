"""Customer history carried forward: running totals per customer and currency, week after week.

Each week's totals are the previous week's plus the week's validated rows, so the weekly cost
follows the number of customers, not the number of weeks behind. Amounts are carried in integer
thousandths of the currency unit (ISO minor units go to 3 decimals), so sums are exact and the
carried totals equal a full recompute whatever the order weeks were added in. Only validated rows
count: quarantined rows (duplicates, unknown products, NaN or non-positive amounts) never reach a
lifetime figure.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from customer_assets.logic.identity import is_in

KEYS = ["customer_id", "currency"]
TOTALS = ["amount_milli", "transaction_count", "first_purchase_at", "last_purchase_at"]
# One row per customer and currency as of a week's end; ``last_purchase_before_week`` is the last
# purchase before that week (for the lifecycle segment).
HISTORY_COLUMNS = [*KEYS, *TOTALS, "last_purchase_before_week", "week_start"]
HISTORY_INPUTS = ["customer_id", "currency", "amount", "timestamp"]
MILLI = 1000

# Per customer as the transform reads it (what the source's history query used to answer).
CUSTOMER_COLUMNS = [
    "customer_id",
    "lifetime_value_usd",
    "transaction_count",
    "first_purchase_at",
    "last_purchase_before_week",
]

_TS = "datetime64[ns, UTC]"


def to_milli(amount: pd.Series) -> pd.Series:
    return np.round(amount.astype("float64") * MILLI).astype("int64")


def week_totals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per customer and currency: the week's validated amounts (thousandths), count, first and last
    purchase."""
    if rows.empty:
        return empty_totals()
    frame = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype("str"),
            "currency": rows["currency"].astype("str"),
            "amount_milli": to_milli(rows["amount"]),
            "timestamp": pd.to_datetime(rows["timestamp"], utc=True),
        }
    )
    totals = (
        frame.groupby(KEYS, sort=False)
        .agg(
            amount_milli=("amount_milli", "sum"),
            transaction_count=("amount_milli", "size"),
            first_purchase_at=("timestamp", "min"),
            last_purchase_at=("timestamp", "max"),
        )
        .reset_index()
    )
    return _typed(totals, TOTALS)


def empty_totals() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in [*KEYS, *TOTALS]}), TOTALS)


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for key in KEYS:
        out[key] = out[key].astype("str")
    for column in columns:
        if column in ("amount_milli", "transaction_count"):
            out[column] = out[column].astype("int64")
        else:
            out[column] = pd.to_datetime(out[column], utc=True).astype(_TS)
    return out


def typed_history(rows: pd.DataFrame) -> pd.DataFrame:
    """History rows as read from a warehouse (its timestamps naive UTC or aware, by engine) with
    the carried types: the keys as text, the totals as int64, the timestamps UTC."""
    return _typed(rows, [*TOTALS, "last_purchase_before_week"])


def carry(previous: pd.DataFrame, week: pd.DataFrame, week_start: datetime) -> pd.DataFrame:
    """The totals as of the end of the week starting ``week_start``: ``previous`` (totals as of the
    week before, any frame with KEYS + TOTALS) plus ``week`` (``week_totals`` of the week)."""
    before = _typed(previous[[*KEYS, *TOTALS]], TOTALS) if len(previous) else empty_totals()
    merged = before.merge(week, on=KEYS, how="outer", suffixes=("_before", "_week"))
    out = merged[KEYS].copy()
    for column in ("amount_milli", "transaction_count"):
        out[column] = (
            merged[f"{column}_before"].fillna(0) + merged[f"{column}_week"].fillna(0)
        ).astype("int64")
    out["first_purchase_at"] = merged[["first_purchase_at_before", "first_purchase_at_week"]].min(
        axis=1
    )
    out["last_purchase_at"] = merged[["last_purchase_at_before", "last_purchase_at_week"]].max(
        axis=1
    )
    out["last_purchase_before_week"] = merged["last_purchase_at_before"]
    out = _typed(out, [*TOTALS, "last_purchase_before_week"])
    out["week_start"] = pd.Timestamp(week_start).tz_convert(None)
    return out.sort_values(KEYS, kind="stable").reset_index(drop=True)[HISTORY_COLUMNS]


def customer_totals(
    history: pd.DataFrame,
    week_end: datetime,
    customers: pd.Series | None = None,
    rates_path: str | None = None,
) -> pd.DataFrame:
    """Per customer (of ``customers``, or all): lifetime value in USD, transaction count, first
    purchase and the last purchase before the week, as of ``week_end``.

    Each currency's total is converted at the ECB rate (of ``rates_path``; None: the shipped file)
    of the week's last day (the value as of that date, as a balance would be translated); currencies
    without a rate are left out, as validation quarantines them.
    """
    from customer_assets.logic.currency import daily_rate_table, supported_currencies

    rows = history if customers is None else history[is_in(history["customer_id"], customers)]
    if rows.empty:
        return pd.DataFrame({c: [] for c in CUSTOMER_COLUMNS}).astype(
            {
                "customer_id": "str",
                "lifetime_value_usd": "float64",
                "transaction_count": "int64",
                "first_purchase_at": _TS,
                "last_purchase_before_week": _TS,
            }
        )
    closing_day = (week_end - timedelta(days=1)).date()
    rates = daily_rate_table(
        closing_day, closing_day, sorted(supported_currencies(rates_path)), rates_path
    ).set_index("currency")
    usd = rows["amount_milli"] / MILLI * rows["currency"].map(rates["usd_per_unit"])
    rows = rows.assign(usd=usd).dropna(subset=["usd"])
    per_customer = (
        rows.groupby("customer_id", sort=False)
        .agg(
            lifetime_value_usd=("usd", "sum"),
            transaction_count=("transaction_count", "sum"),
            first_purchase_at=("first_purchase_at", "min"),
            last_purchase_before_week=("last_purchase_before_week", "max"),
        )
        .reset_index()
    )
    per_customer["transaction_count"] = per_customer["transaction_count"].astype("int64")
    return per_customer[CUSTOMER_COLUMNS]


def balance_rules(day, max_amount_usd: float, rates_path: str | None = None) -> pd.DataFrame:
    """Per currency with an ECB rate (in ``rates_path``; None: the shipped file): its minor units and
    the ceiling (``max_amount_usd``) in its own units, at the rate of ``day``: what the opening
    balance applies to the source's history."""
    from customer_assets.logic.currency import (
        daily_rate_table,
        iso4217_minor_units,
        supported_currencies,
    )

    rates = daily_rate_table(day, day, sorted(supported_currencies(rates_path)), rates_path)
    minor = iso4217_minor_units()
    rates = rates[rates["currency"].isin(list(minor))]
    return pd.DataFrame(
        {
            "currency": rates["currency"].astype("str").to_numpy(),
            "minor_units": [int(minor[c]) for c in rates["currency"]],
            "ceiling": (max_amount_usd / rates["usd_per_unit"]).to_numpy(),
        }
    )
