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
    # PostgreSQL numeric and float columns hold Infinity (NaN reads as missing): never a lifetime figure.
    Rule("NON_FINITE_AMOUNT", "validity", "amount is a finite number",
         lambda d, c: d["amount"].notna() & ~np.isfinite(d["amount"].astype("float64"))),
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
    """``;``-joined codes of the failing columns of each row ('' where none fail). Only the rows that fail
    something are joined: over a week's validated rows, a few thousand of 600,000."""
    codes = pd.Series("", index=failures.index, dtype=object)
    failing = failures.to_numpy(dtype=bool).any(axis=1) if len(failures.columns) else np.zeros(len(failures), bool)
    if failing.any():
        hits = failures.loc[failing]
        joined = pd.Series("", index=hits.index, dtype=object)
        for code in hits.columns:
            hit = hits[code].to_numpy(dtype=bool)
            if hit.any():
                joined[hit] = joined[hit] + code + ";"
        codes[failing] = joined.str.rstrip(";").to_numpy(dtype=object)
    return codes


@dataclass
class ValidationSplit:
    raw: pd.DataFrame
    bad: np.ndarray  # per raw row: fails a hard rule
    quarantined: pd.DataFrame
    failures: pd.DataFrame

    @property
    def validated(self) -> pd.DataFrame:
        """The rows that passed every hard rule (a copy: the asset instead writes them a slice at a time)."""
        return self.raw.loc[~self.bad]

    @property
    def validated_count(self) -> int:
        return int(len(self.bad) - self.bad.sum())


def split_by_hard_rules(raw: pd.DataFrame, ctx: WeekContext) -> ValidationSplit:
    """Quarantine rows failing any hard rule (with all their reason codes); keep the rest."""
    failures = evaluate_hard_rules(raw, ctx)
    bad = failures.any(axis=1).to_numpy()
    # Boolean selection already copies; with Copy-on-Write on, nothing below writes into ``raw``.
    quarantined = raw.loc[bad]
    quarantined["reason_codes"] = join_codes(failures.loc[bad])
    quarantined["primary_reason"] = quarantined["reason_codes"].str.split(";").str[0]
    return ValidationSplit(raw=raw, bad=bad, quarantined=quarantined, failures=failures)


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
    per_customer = validated.groupby("customer_id")["amount"].transform("size")
    flags["HIGH_FREQUENCY_CUSTOMER"] = per_customer > settings.max_customer_transactions
    return flags.astype(bool)


# What the statistical rules read of each validated row.
ANOMALY_INPUTS = ["customer_id", "product_id", "amount", "currency", "timestamp"]
ANOMALY_COLUMNS = ["transaction_id", "customer_id", "product_id", "amount", "currency", "timestamp"]


@dataclass
class AnomalyOutcome:
    codes: pd.Series  # per validated row (its index): ';'-joined anomaly codes, '' where none
    amount_usd: pd.Series  # per validated row
    status: str  # 'ok', or why detection failed
    flags: pd.DataFrame  # per validated row, one boolean column per rule

    @property
    def flagged(self) -> pd.Index:
        return self.codes.index[(self.codes != "").to_numpy()]


def detect_week_anomalies(rows: pd.DataFrame, settings: AnomalySettings = AnomalySettings()) -> AnomalyOutcome:
    """Statistical rules over the validated rows' ANOMALY_INPUTS, comparing amounts in USD.

    Anomaly detection is advisory: if it fails, validation goes on without it and says why.
    """
    usd = convert_to_usd(rows["amount"], rows["currency"], rows["timestamp"])["amount_usd"]
    status = "ok"
    try:
        flags = detect_anomalies(rows, usd, settings) if len(rows) else pd.DataFrame(
            {code: pd.Series(dtype=bool) for code in ANOMALY_RULES}, index=rows.index)
    except Exception as exc:  # noqa: BLE001 - advisory step, recorded in the report
        status = f"failed: {type(exc).__name__}: {exc}"
        flags = pd.DataFrame({code: False for code in ANOMALY_RULES}, index=rows.index)
    return AnomalyOutcome(codes=join_codes(flags), amount_usd=usd, status=status, flags=flags)


def with_anomaly_flags(rows: pd.DataFrame, outcome: AnomalyOutcome) -> pd.DataFrame:
    """Validated rows (all or some) with their ``anomaly_flags`` and ``is_anomaly`` columns."""
    codes = outcome.codes.reindex(rows.index).astype(str)
    return rows.assign(anomaly_flags=codes, is_anomaly=(codes != "").to_numpy())


def anomaly_table(rows: pd.DataFrame, outcome: AnomalyOutcome) -> pd.DataFrame:
    """The flagged rows for review: ids, amount in both currencies, time and codes. ``rows`` holds at least
    the flagged ones, under the index the outcome was computed on."""
    flagged = outcome.flagged
    table = rows.loc[flagged, ANOMALY_COLUMNS]
    table.insert(5, "amount_usd", outcome.amount_usd[flagged])
    table["anomaly_flags"] = outcome.codes[flagged].astype(str)
    return table.reset_index(drop=True)


def validated_batches(split: ValidationSplit, outcome: AnomalyOutcome, rows: int):
    """The validated rows with their anomaly columns, ``rows`` of the raw week at a time: only a slice is
    ever copied, never the whole week."""
    for start in range(0, max(len(split.raw), 1), rows):
        keep = ~split.bad[start:start + rows]
        yield with_anomaly_flags(split.raw.iloc[start:start + rows].loc[keep], outcome).reset_index(drop=True)


def flag_validated(validated: pd.DataFrame, ctx: WeekContext,
                   settings: AnomalySettings = AnomalySettings()
                   ) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame]:
    """Add ``is_anomaly``/``anomaly_flags`` to validated rows; return them, the flagged rows, a status and flags.

    The whole-frame form (the asset writes ``validated_batches`` instead); tests compare the two.
    """
    outcome = detect_week_anomalies(validated[ANOMALY_INPUTS], settings)
    return with_anomaly_flags(validated, outcome), anomaly_table(validated, outcome), outcome.status, outcome.flags
