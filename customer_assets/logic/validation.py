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
from customer_assets.weeks import WeekContext

EARLIEST_VALID_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")


DEFAULT_MAX_AMOUNT_USD = 1_000_000.0


@dataclass(frozen=True)
class RuleInputs:
    """What a hard rule reads besides the rows: the week, each row's USD amount, the USD ceiling, and the ids
    that another loaded week holds while the source still holds them there (``held_elsewhere``)."""

    week: WeekContext
    amount_usd: pd.Series
    max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD
    held_elsewhere: frozenset[str] = frozenset()

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
    """A positive amount smaller than one minor unit of its currency (``0.0000000001`` USD, ``5e-324``), or one
    whose USD amount rounds to 0 at the six decimals validation keeps: no such amount was paid, and a zero USD
    amount breaks every figure that divides or compares by it. The precision rule tolerates float noise far
    larger than such an amount, so it let them through."""
    amount = df["amount"].astype("float64")
    positive = (amount > 0) & np.isfinite(amount)
    unit = np.power(10.0, -df["currency"].map(iso4217_minor_units()).astype("float64"))  # NaN: unknown currency
    below = amount < unit * (1 - 1e-9)
    vanishes = inputs.amount_usd.astype("float64").round(6) <= 0
    return (positive & (below | vanishes)).fillna(False).astype(bool)


# What makes two rows with one transaction id the same transaction (the joined customer and product columns
# follow from these).
TRANSACTION_CONTENT = ["customer_id", "product_id", "amount", "currency", "timestamp"]


def _shared_ids(df: pd.DataFrame) -> pd.Series:
    """Rows whose (non-null) transaction id appears more than once in the week: usually none or a few."""
    return df["transaction_id"].duplicated(keep=False) & df["transaction_id"].notna()


def _conflicting_among(rows: pd.DataFrame) -> pd.Series:
    """Of rows sharing ids (their id and content columns), those whose id is held with different contents."""
    versions = rows.drop_duplicates().groupby("transaction_id", dropna=False).size()
    return rows["transaction_id"].isin(versions.index[versions > 1])


def _conflicting_ids(df: pd.DataFrame, _: RuleInputs) -> pd.Series:
    """Every row of an id held by rows of different content: which one is genuine cannot be told, so none is
    loaded (keeping the earliest let a backdated copy replace the real row)."""
    shared = _shared_ids(df)
    if not shared.any():
        return shared
    conflicting = _conflicting_among(df.loc[shared, ["transaction_id", *TRANSACTION_CONTENT]])
    return conflicting.reindex(df.index, fill_value=False)


def _duplicate_ids(df: pd.DataFrame, _: RuleInputs) -> pd.Series:
    """Identical copies of one transaction beyond the one kept. The copies are equal in every column that
    matters; the one kept is the first that decoded cleanly (a copy marked INVALID_ENCODING is quarantined
    anyway, so keeping it would load none), then the first by position."""
    shared = _shared_ids(df)
    if not shared.any():
        return shared
    rows = df.loc[shared, ["transaction_id", *TRANSACTION_CONTENT]]
    if "invalid_encoding" in df:
        rows = rows.iloc[np.argsort(df.loc[shared, "invalid_encoding"].notna().to_numpy(), kind="stable")]
    copies = rows.duplicated(keep="first") & ~_conflicting_among(rows)
    return copies.reindex(df.index, fill_value=False)


HARD_RULES: list[Rule] = [
    # The extract replaced bytes that were not UTF-8 and said in which columns (issue: a SQL_ASCII source).
    Rule("INVALID_ENCODING", "validity", "every text value is valid UTF-8",
         lambda d, c: d["invalid_encoding"].notna() if "invalid_encoding" in d else pd.Series(False, index=d.index)),
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
    Rule("BELOW_MINOR_UNIT", "validity", "amount is at least one minor unit of its currency (0.01 USD, 1 JPY) and "
         "is more than 0 in USD", _below_minor_unit),
    Rule("AMOUNT_ABOVE_CEILING", "validity", "amount in USD is at most the ceiling (MAX_AMOUNT_USD)",
         lambda d, c: (c.amount_usd > c.max_amount_usd).fillna(False).astype(bool)),
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
    Rule("CONFLICTING_DUPLICATE", "consistency", "rows sharing a transaction_id have the same content",
         _conflicting_ids),
    Rule("DUPLICATE_TRANSACTION_ID", "consistency", "transaction_id is unique in the week (identical copies: "
         "one is kept)", _duplicate_ids),
    # A moved transaction has left its old week in the source; a reused id has not. Loading a reused id would
    # make the load delete the other week's genuine row as if it had moved (issue 21, item 1).
    Rule("DUPLICATE_ACROSS_WEEKS", "consistency", "transaction_id is not held by another loaded week whose source "
         "rows still hold it (a reused id, not a moved transaction)",
         lambda d, c: d["transaction_id"].isin(list(c.held_elsewhere)) if c.held_elsewhere
         else pd.Series(False, index=d.index)),
    Rule("UNKNOWN_CUSTOMER", "consistency", "customer exists in customers",
         lambda d, c: d["customer_id"].notna() & ~d["customer_exists"].astype(bool)),
    Rule("UNKNOWN_PRODUCT", "consistency", "product exists in products", lambda d, c: ~d["product_exists"].astype(bool)),
]

HARD_CATEGORIES = ("completeness", "validity", "consistency")


def usd_amounts(raw: pd.DataFrame) -> pd.DataFrame:
    """Each row's ``amount_usd`` at its day's ECB rate, with ``fx_rate`` and ``fx_rate_date`` (NaN where there
    is none): converted once per row, for the ceiling rule and the statistical rules, and carried on the
    validated rows to the transform."""
    return convert_to_usd(raw["amount"], raw["currency"], raw["timestamp"])


def evaluate_hard_rules(raw: pd.DataFrame, ctx: WeekContext, max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
                        amount_usd: pd.Series | None = None,
                        held_elsewhere: frozenset[str] = frozenset()) -> pd.DataFrame:
    """One boolean column per rule code: True where the row fails that rule."""
    inputs = RuleInputs(ctx, usd_amounts(raw)["amount_usd"] if amount_usd is None else amount_usd, max_amount_usd,
                        frozenset(held_elsewhere))
    return pd.DataFrame({rule.code: rule.failing(raw, inputs).astype(bool).to_numpy() for rule in HARD_RULES},
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
    fx: pd.DataFrame  # per raw row: amount_usd, fx_rate, fx_rate_date

    @property
    def amount_usd(self) -> pd.Series:
        return self.fx["amount_usd"]

    @property
    def validated_count(self) -> int:
        return int(len(self.bad) - self.bad.sum())


def validated_columns(raw: pd.DataFrame) -> list[str]:
    """The raw columns a validated row keeps: all but the extract's encoding marks (null on every such row)."""
    return [c for c in raw.columns if c != "invalid_encoding"]


def split_by_hard_rules(raw: pd.DataFrame, ctx: WeekContext, max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
                        held_elsewhere: frozenset[str] = frozenset()) -> ValidationSplit:
    """Quarantine rows failing any hard rule (with all their reason codes); keep the rest."""
    fx = usd_amounts(raw)
    failures = evaluate_hard_rules(raw, ctx, max_amount_usd, fx["amount_usd"], held_elsewhere)
    bad = failures.any(axis=1).to_numpy()
    # Boolean selection already copies; with Copy-on-Write on, nothing below writes into ``raw``.
    quarantined = raw.loc[bad]
    quarantined["reason_codes"] = join_codes(failures.loc[bad])
    quarantined["primary_reason"] = quarantined["reason_codes"].str.split(";").str[0]
    return ValidationSplit(raw=raw, bad=bad, quarantined=quarantined, failures=failures, fx=fx)


@dataclass(frozen=True)
class AnomalySettings:
    robust_z: float = 3.5
    iqr_multiplier: float = 3.0
    min_product_transactions: int = 10
    max_customer_transactions: int = 50


ANOMALY_RULES = {
    "AMOUNT_MAD": "USD amount's robust z-score (median and MAD of the week's log amounts, each customer weighing "
                  "once) above 3.5",
    "AMOUNT_IQR": "USD amount outside [Q1 - k*IQR, Q3 + k*IQR] (quartiles with each customer weighing once)",
    "PRODUCT_MAD": "USD amount's robust z-score within its product (median and MAD of log amounts, each customer "
                   "weighing once) above 3.5",
    "HIGH_FREQUENCY_CUSTOMER": "customer with more than 50 transactions in the week (possible bot)",
}

# A MAD is 0.6745 standard deviations of a normal sample, a mean absolute deviation 0.7979 of one: these
# scale them to one (Iglewicz and Hoaglin).
MAD_SCALE = 1.4826
MEAN_AD_SCALE = 1.253314
# The least spread assumed, in log10 USD: amounts within about 40% of the median are never outliers, however
# alike the others are (fixed prices otherwise make a 5% difference look like many deviations).
MIN_LOG_SPREAD = float(np.log10(1.1))


def robust_z(deviations: pd.Series, mad: pd.Series | float, mean_ad: pd.Series | float) -> pd.Series:
    """|x - median| (``deviations``) in robust standard deviations: the scaled MAD, or the scaled mean absolute
    deviation where the MAD is 0 (more than half the values equal), never below ``MIN_LOG_SPREAD``. One extreme
    value moves neither the median nor the MAD, so it cannot hide the others as it inflated the mean and
    standard deviation."""
    mad = pd.Series(mad, index=deviations.index) if not isinstance(mad, pd.Series) else mad
    mean_ad = pd.Series(mean_ad, index=deviations.index) if not isinstance(mean_ad, pd.Series) else mean_ad
    scale = (MAD_SCALE * mad).where(mad > 0, MEAN_AD_SCALE * mean_ad).clip(lower=MIN_LOG_SPREAD)
    return deviations / scale


def weighted_quantiles(values: pd.Series, weights: pd.Series, *qs: float) -> list[float]:
    """The ``qs`` quantiles of ``values`` where each value counts ``weights`` times (NaN values left out), from
    one sort."""
    known = values.notna().to_numpy()
    v, w = values.to_numpy(dtype=float)[known], weights.to_numpy(dtype=float)[known]
    if not len(v):
        return [float("nan")] * len(qs)
    order = np.argsort(v)
    cumulative = np.cumsum(w[order])
    at = np.minimum(np.searchsorted(cumulative, np.asarray(qs) * cumulative[-1]), len(v) - 1)
    return [float(x) for x in v[order][at]]


def _codes(keys: pd.Series) -> np.ndarray:
    """Group codes 0..n-1 of ``keys`` (a missing key is a group of its own)."""
    return pd.factorize(keys, use_na_sentinel=False)[0].astype(np.int64)


def grouped_weighted_median(values: pd.Series, weights: pd.Series, groups: np.ndarray) -> pd.Series:
    """Per row, the weighted median of its group's values (``groups``: codes from ``_codes``; NaN values left
    out), in one sort of the week, whatever the number of groups."""
    v_all, w_all = values.to_numpy(dtype=float), weights.to_numpy(dtype=float)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    rows = np.flatnonzero(~np.isnan(v_all))
    order = rows[np.lexsort((v_all[rows], groups[rows]))]
    g, v, w = groups[order], v_all[order], w_all[order]
    totals = np.bincount(g, weights=w, minlength=n_groups)
    before = np.concatenate(([0.0], np.cumsum(totals)[:-1]))  # the weight of the groups sorted before each group
    running = np.cumsum(w)
    slack = 1e-9 * (running[-1] if len(running) else 1.0)  # the running sum's rounding, across groups
    reached = np.flatnonzero(running - before[g] >= 0.5 * totals[g] - slack)
    first_groups, first = np.unique(g[reached], return_index=True)
    median = np.full(n_groups, np.nan)
    median[first_groups] = v[reached[first]]
    return pd.Series(median[groups] if n_groups else np.array([], float), index=values.index)


def customer_weights(customers: np.ndarray, index: pd.Index, within: np.ndarray | None = None) -> pd.Series:
    """1 / the customer's rows (``customers``: codes; within a group such as the product): every customer weighs
    one, however many rows it has, so one bot with 5,000 transactions moves a baseline as one customer does."""
    codes = customers
    if within is not None and len(codes):
        codes = pd.factorize(codes * (int(within.max()) + 1) + within)[0]
    return pd.Series(1.0 / np.bincount(codes)[codes] if len(codes) else np.array([], float), index=index)


def detect_anomalies(validated: pd.DataFrame, amount_usd: pd.Series,
                     settings: AnomalySettings = AnomalySettings()) -> pd.DataFrame:
    """One boolean column per anomaly rule over validated rows, comparing amounts in USD.

    Amounts are compared on a log scale for the robust z-scores: prices are spread multiplicatively (a 10 USD
    and a 1,000 USD product are equally ordinary), so distance from the median is a ratio. Every baseline
    (medians, deviations, quartiles) weighs each customer once (each row 1/its customer's rows): one customer
    with thousands of transactions otherwise became the week's median and flagged everyone else.
    """
    usd = amount_usd.astype(float)
    log_usd = np.log10(usd.where(usd > 0))
    customers = _codes(validated["customer_id"])
    weights = customer_weights(customers, validated.index)
    flags = pd.DataFrame(index=validated.index)
    deviations = (log_usd - weighted_quantiles(log_usd, weights, 0.5)[0]).abs()
    mean_ad = float((deviations * weights).sum() / weights[deviations.notna()].sum()) if deviations.notna().any() else 0.0
    flags["AMOUNT_MAD"] = (robust_z(deviations, weighted_quantiles(deviations, weights, 0.5)[0], mean_ad)
                           > settings.robust_z).fillna(False)
    q1, q3 = weighted_quantiles(usd, weights, 0.25, 0.75)
    iqr = q3 - q1
    flags["AMOUNT_IQR"] = (usd < q1 - settings.iqr_multiplier * iqr) | (usd > q3 + settings.iqr_multiplier * iqr)
    product = _codes(validated["product_id"])
    count = pd.Series(np.bincount(product)[product], index=validated.index) if len(product) else log_usd
    p_weights = customer_weights(customers, validated.index, within=product)
    p_deviations = (log_usd - grouped_weighted_median(log_usd, p_weights, product)).abs()
    known = p_deviations.notna().to_numpy()
    weighted_sum = np.bincount(product, weights=np.where(known, p_deviations.to_numpy() * p_weights.to_numpy(), 0.0))
    weight_sum = np.bincount(product, weights=np.where(known, p_weights.to_numpy(), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean_ad = pd.Series((weighted_sum / weight_sum)[product], index=validated.index)
    z = robust_z(p_deviations, grouped_weighted_median(p_deviations, p_weights, product), p_mean_ad)
    flags["PRODUCT_MAD"] = ((count >= settings.min_product_transactions) & (z > settings.robust_z)).fillna(False)
    per_customer = np.bincount(customers)[customers] if len(customers) else np.array([], np.int64)
    flags["HIGH_FREQUENCY_CUSTOMER"] = (per_customer > settings.max_customer_transactions) & validated[
        "customer_id"].notna().to_numpy()
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


def detect_week_anomalies(rows: pd.DataFrame, settings: AnomalySettings = AnomalySettings(),
                          amount_usd: pd.Series | None = None) -> AnomalyOutcome:
    """Statistical rules over the validated rows' ANOMALY_INPUTS, comparing amounts in USD (``amount_usd``
    when the caller has them, under the rows' index).

    Anomaly detection is advisory: if it fails, validation goes on without it and says why.
    """
    usd = usd_amounts(rows)["amount_usd"] if amount_usd is None else amount_usd
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
        part = split.raw.iloc[start:start + rows].loc[keep, validated_columns(split.raw)]
        yield with_usd(with_anomaly_flags(part, outcome), split.fx).reset_index(drop=True)


def with_usd(rows: pd.DataFrame, fx: pd.DataFrame) -> pd.DataFrame:
    """Validated rows with the USD conversion validation made (``fx`` under the rows' index)."""
    fx = fx.loc[rows.index]
    return rows.assign(amount_usd=fx["amount_usd"].round(6), fx_rate=fx["fx_rate"], fx_rate_date=fx["fx_rate_date"])


@dataclass
class WeekValidation:
    """A validated week: the hard rules' split, the anomaly outcome and its review table. The validated rows
    themselves are only ever handed out a slice of the raw week at a time (``batches``)."""

    split: ValidationSplit
    anomalies: AnomalyOutcome
    anomaly_table: pd.DataFrame

    def batches(self, rows: int):
        return validated_batches(self.split, self.anomalies, rows)


def validate_week(raw: pd.DataFrame, ctx: WeekContext, max_amount_usd: float = DEFAULT_MAX_AMOUNT_USD,
                  settings: AnomalySettings = AnomalySettings(),
                  held_elsewhere: frozenset[str] = frozenset()) -> WeekValidation:
    """The hard rules, then the statistical rules over the rows that passed them (five columns of them, with
    the USD amounts the hard rules converted). ``held_elsewhere``: the week's ids that another loaded week holds
    while the source still holds them there (quarantined DUPLICATE_ACROSS_WEEKS)."""
    split = split_by_hard_rules(raw, ctx, max_amount_usd, held_elsewhere)
    outcome = detect_week_anomalies(raw.loc[~split.bad, ANOMALY_INPUTS], settings,
                                    amount_usd=split.amount_usd[~split.bad])
    return WeekValidation(split, outcome, anomaly_table(raw, outcome))
