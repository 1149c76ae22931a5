"""Data-quality rules for a week of raw transactions.

Hard rules (completeness, validity, consistency) quarantine a row with a reason code; statistical rules
(anomalies) only flag it. Every raw row ends in exactly one of validated or quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd

from customer_assets.logic.currency import convert_to_usd, iso4217_minor_units, supported_currencies

EARLIEST_VALID_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")


@dataclass(frozen=True)
class WeekContext:
    """The week being checked and the moment of the check."""

    week_start: datetime
    week_end: datetime
    now: datetime


@dataclass(frozen=True)
class Rule:
    code: str
    category: str
    description: str
    failing: Callable[[pd.DataFrame, WeekContext], pd.Series]


def _decimals_exceed_minor_units(df: pd.DataFrame, _: WeekContext) -> pd.Series:
    units = df["currency"].map(iso4217_minor_units())
    known = units.notna() & df["amount"].notna()
    scaled = df.loc[known, "amount"].astype(float) * np.power(10.0, units[known].astype(float))
    # Amounts travel as float64: allow representation error, not a real extra digit.
    excess = (scaled - scaled.round()).abs() > 1e-6 * np.maximum(1.0, scaled.abs() / 1e6)
    return excess.reindex(df.index, fill_value=False)


def _duplicate_ids(df: pd.DataFrame, _: WeekContext) -> pd.Series:
    # Keep the earliest copy (ties broken by position) so the outcome does not depend on fetch order.
    order = df.sort_values(["timestamp"], kind="stable").index
    dup = df.loc[order, "transaction_id"].duplicated(keep="first") & df.loc[order, "transaction_id"].notna()
    return dup.reindex(df.index)


HARD_RULES: list[Rule] = [
    Rule("MISSING_TRANSACTION_ID", "completeness", "transaction_id is not null",
         lambda d, c: d["transaction_id"].isna()),
    Rule("MISSING_CUSTOMER_ID", "completeness", "customer_id is not null", lambda d, c: d["customer_id"].isna()),
    Rule("MISSING_AMOUNT", "completeness", "amount is not null", lambda d, c: d["amount"].isna()),
    Rule("MISSING_TIMESTAMP", "completeness", "timestamp is not null", lambda d, c: d["timestamp"].isna()),
    Rule("MISSING_CURRENCY", "completeness", "currency is not null", lambda d, c: d["currency"].isna()),
    Rule("NON_POSITIVE_AMOUNT", "validity", "amount > 0", lambda d, c: d["amount"].notna() & (d["amount"] <= 0)),
    Rule("INVALID_TIMESTAMP", "validity", f"timestamp on or after {EARLIEST_VALID_TIMESTAMP.date()}",
         lambda d, c: d["timestamp"].notna() & (d["timestamp"] < EARLIEST_VALID_TIMESTAMP)),
    Rule("INVALID_CURRENCY", "validity", "currency is an ISO 4217 code",
         lambda d, c: d["currency"].notna() & ~d["currency"].isin(list(iso4217_minor_units()))),
    Rule("UNSUPPORTED_CURRENCY", "validity", "currency has an ECB reference rate (needed for amount_usd)",
         lambda d, c: d["currency"].isin(list(iso4217_minor_units()))
         & ~d["currency"].isin(list(supported_currencies()))),
    Rule("PRECISION_MISMATCH", "validity", "amount has no more decimals than the currency's minor units",
         _decimals_exceed_minor_units),
    Rule("BEFORE_CUSTOMER_CREATED", "consistency", "transaction is not before the customer's creation",
         lambda d, c: (d["timestamp"] < d["customer_created_at"]).fillna(False).astype(bool)),
    Rule("FUTURE_TIMESTAMP", "consistency", "transaction is not in the future",
         lambda d, c: d["timestamp"].notna() & (d["timestamp"] > pd.Timestamp(c.now))),
    Rule("OUTSIDE_WEEK", "consistency", "transaction falls inside the partition's week",
         lambda d, c: d["timestamp"].notna() & ((d["timestamp"] < pd.Timestamp(c.week_start))
                                                | (d["timestamp"] >= pd.Timestamp(c.week_end)))),
    Rule("DUPLICATE_TRANSACTION_ID", "consistency", "transaction_id is unique in the week", _duplicate_ids),
    Rule("UNKNOWN_CUSTOMER", "consistency", "customer exists in customers",
         lambda d, c: d["customer_id"].notna() & ~d["customer_exists"].astype(bool)),
    Rule("UNKNOWN_PRODUCT", "consistency", "product exists in products", lambda d, c: ~d["product_exists"].astype(bool)),
]

HARD_CATEGORIES = ("completeness", "validity", "consistency")


def evaluate_hard_rules(raw: pd.DataFrame, ctx: WeekContext) -> pd.DataFrame:
    """One boolean column per rule code: True where the row fails that rule."""
    return pd.DataFrame({rule.code: rule.failing(raw, ctx).astype(bool).to_numpy() for rule in HARD_RULES},
                        index=raw.index)


def join_codes(failures: pd.DataFrame) -> pd.Series:
    """``;``-joined codes of the failing columns of each row ('' where none fail)."""
    codes = pd.Series("", index=failures.index, dtype=object)
    for code in failures.columns:
        hit = failures[code].to_numpy()
        if hit.any():
            codes[hit] = codes[hit] + code + ";"
    return codes.str.rstrip(";")


@dataclass
class ValidationSplit:
    validated: pd.DataFrame
    quarantined: pd.DataFrame
    failures: pd.DataFrame


def split_by_hard_rules(raw: pd.DataFrame, ctx: WeekContext) -> ValidationSplit:
    """Quarantine rows failing any hard rule (with all their reason codes); keep the rest."""
    failures = evaluate_hard_rules(raw, ctx)
    bad = failures.any(axis=1).to_numpy()
    # Boolean selection already copies; with Copy-on-Write on, nothing below writes into ``raw``.
    quarantined = raw.loc[bad]
    quarantined["reason_codes"] = join_codes(failures.loc[bad])
    quarantined["primary_reason"] = quarantined["reason_codes"].str.split(";").str[0]
    return ValidationSplit(validated=raw.loc[~bad], quarantined=quarantined, failures=failures)


@dataclass(frozen=True)
class AnomalySettings:
    zscore: float = 3.0
    iqr_multiplier: float = 3.0
    min_product_transactions: int = 10
    max_customer_transactions: int = 50


ANOMALY_RULES = {
    "AMOUNT_3SD": "USD amount more than 3 standard deviations from the week's mean",
    "AMOUNT_IQR": "USD amount outside [Q1 - k*IQR, Q3 + k*IQR]",
    "PRODUCT_ZSCORE": "USD amount more than 3 standard deviations from its product's mean",
    "HIGH_FREQUENCY_CUSTOMER": "customer with more than 50 transactions in the week (possible bot)",
}


def detect_anomalies(validated: pd.DataFrame, amount_usd: pd.Series,
                     settings: AnomalySettings = AnomalySettings()) -> pd.DataFrame:
    """One boolean column per anomaly rule over validated rows, comparing amounts in USD."""
    usd = amount_usd.astype(float)
    flags = pd.DataFrame(index=validated.index)
    std = usd.std(ddof=0)
    flags["AMOUNT_3SD"] = ((usd - usd.mean()).abs() > settings.zscore * std) if std > 0 else False
    q1, q3 = usd.quantile(0.25), usd.quantile(0.75)
    iqr = q3 - q1
    flags["AMOUNT_IQR"] = (usd < q1 - settings.iqr_multiplier * iqr) | (usd > q3 + settings.iqr_multiplier * iqr)
    by_product = usd.groupby(validated["product_id"])
    count = by_product.transform("size")
    p_std = by_product.transform("std", ddof=0)  # vectorised: no Python call per product
    z = (usd - by_product.transform("mean")).abs() / p_std.where(p_std > 0)
    flags["PRODUCT_ZSCORE"] = ((count >= settings.min_product_transactions) & (z > settings.zscore)).fillna(False)
    per_customer = validated.groupby("customer_id")["transaction_id"].transform("size")
    flags["HIGH_FREQUENCY_CUSTOMER"] = per_customer > settings.max_customer_transactions
    return flags.astype(bool)


def flag_validated(validated: pd.DataFrame, ctx: WeekContext,
                   settings: AnomalySettings = AnomalySettings()
                   ) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame]:
    """Add ``is_anomaly``/``anomaly_flags`` to validated rows; return them, the flagged rows, a status and flags.

    Anomaly detection is advisory: if it fails, validation goes on without it and says why.
    """
    out = validated.copy(deep=False)  # Copy-on-Write: the new columns never touch the caller's frame
    usd = convert_to_usd(out["amount"], out["currency"], out["timestamp"])["amount_usd"]
    status = "ok"
    try:
        flags = detect_anomalies(out, usd, settings) if len(out) else pd.DataFrame(
            {code: pd.Series(dtype=bool) for code in ANOMALY_RULES}, index=out.index)
    except Exception as exc:  # noqa: BLE001 - advisory step, recorded in the report
        status = f"failed: {type(exc).__name__}: {exc}"
        flags = pd.DataFrame({code: False for code in ANOMALY_RULES}, index=out.index)
    out["anomaly_flags"] = join_codes(flags).astype(str)
    out["is_anomaly"] = out["anomaly_flags"] != ""
    anomalies = out.loc[out["is_anomaly"], ["transaction_id", "customer_id", "product_id", "amount", "currency",
                                           "timestamp", "anomaly_flags"]].copy()
    anomalies.insert(5, "amount_usd", usd[out["is_anomaly"]])
    return out, anomalies.reset_index(drop=True), status, flags
