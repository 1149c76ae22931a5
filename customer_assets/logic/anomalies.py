"""Statistical rules over a week's validated transactions: amounts far from what is usual for the
week or for the product, and customers with implausibly many transactions. They only flag a row
(``anomaly_flags``); it is loaded all the same.

The baselines are robust (medians and median absolute deviations, on a log scale) and weigh each
customer once, so neither one extreme amount nor one customer with thousands of transactions moves
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


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

# A MAD is 0.6745 standard deviations of a normal sample, a mean absolute deviation 0.7979 of one:
# these scale them to one (Iglewicz and Hoaglin).
MAD_SCALE = 1.4826
MEAN_AD_SCALE = 1.253314
# The least spread assumed, in log10 USD: amounts within about 40% of the median are never outliers,
# however alike the others are (fixed prices otherwise make a 5% difference look like many
# deviations).
MIN_LOG_SPREAD = float(np.log10(1.1))


def robust_z(
    deviations: pd.Series, mad: pd.Series | float, mean_ad: pd.Series | float
) -> pd.Series:
    """|x - median| (``deviations``) in robust standard deviations: the scaled MAD, or the scaled
    mean absolute deviation where the MAD is 0 (more than half the values equal), never below
    ``MIN_LOG_SPREAD``. One extreme value moves neither the median nor the MAD, so it cannot hide
    the others as it inflated the mean and standard deviation."""
    mad = pd.Series(mad, index=deviations.index) if not isinstance(mad, pd.Series) else mad
    mean_ad = (
        pd.Series(mean_ad, index=deviations.index)
        if not isinstance(mean_ad, pd.Series)
        else mean_ad
    )
    scale = (MAD_SCALE * mad).where(mad > 0, MEAN_AD_SCALE * mean_ad).clip(lower=MIN_LOG_SPREAD)
    return deviations / scale


def weighted_quantiles(values: pd.Series, weights: pd.Series, *qs: float) -> list[float]:
    """The ``qs`` quantiles of ``values`` where each value counts ``weights`` times (NaN values left
    out), from one sort."""
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
    """Per row, the weighted median of its group's values (``groups``: codes from ``_codes``; NaN
    values left out), in one sort of the week, whatever the number of groups."""
    v_all, w_all = values.to_numpy(dtype=float), weights.to_numpy(dtype=float)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    rows = np.flatnonzero(~np.isnan(v_all))
    order = rows[np.lexsort((v_all[rows], groups[rows]))]
    g, v, w = groups[order], v_all[order], w_all[order]
    totals = np.bincount(g, weights=w, minlength=n_groups)
    # the weight of the groups sorted before each group
    before = np.concatenate(([0.0], np.cumsum(totals)[:-1]))
    running = np.cumsum(w)
    # the running sum's rounding, across groups
    slack = 1e-9 * (running[-1] if len(running) else 1.0)
    reached = np.flatnonzero(running - before[g] >= 0.5 * totals[g] - slack)
    first_groups, first = np.unique(g[reached], return_index=True)
    median = np.full(n_groups, np.nan)
    median[first_groups] = v[reached[first]]
    return pd.Series(median[groups] if n_groups else np.array([], float), index=values.index)


def customer_weights(
    customers: np.ndarray, index: pd.Index, within: np.ndarray | None = None
) -> pd.Series:
    """1 / the customer's rows (``customers``: codes; within a group such as the product): every
    customer weighs one, however many rows it has, so one bot with 5,000 transactions moves a
    baseline as one customer does."""
    codes = customers
    if within is not None and len(codes):
        codes = pd.factorize(codes * (int(within.max()) + 1) + within)[0]
    return pd.Series(
        1.0 / np.bincount(codes)[codes] if len(codes) else np.array([], float), index=index
    )


def detect_anomalies(
    validated: pd.DataFrame, amount_usd: pd.Series, settings: AnomalySettings = AnomalySettings()
) -> pd.DataFrame:
    """One boolean column per anomaly rule over validated rows, comparing amounts in USD.

    Amounts are compared on a log scale for the robust z-scores: prices are spread multiplicatively
    (a 10 USD and a 1,000 USD product are equally ordinary), so distance from the median is a ratio.
    Every baseline (medians, deviations, quartiles) weighs each customer once (each row 1/its
    customer's rows): one customer with thousands of transactions otherwise became the week's median
    and flagged everyone else.
    """
    usd = amount_usd.astype(float)
    log_usd = np.log10(usd.where(usd > 0))
    customers = _codes(validated["customer_id"])
    weights = customer_weights(customers, validated.index)
    flags = pd.DataFrame(index=validated.index)
    deviations = (log_usd - weighted_quantiles(log_usd, weights, 0.5)[0]).abs()
    mean_ad = (
        float((deviations * weights).sum() / weights[deviations.notna()].sum())
        if deviations.notna().any()
        else 0.0
    )
    flags["AMOUNT_MAD"] = (
        robust_z(deviations, weighted_quantiles(deviations, weights, 0.5)[0], mean_ad)
        > settings.robust_z
    ).fillna(False)
    q1, q3 = weighted_quantiles(usd, weights, 0.25, 0.75)
    iqr = q3 - q1
    flags["AMOUNT_IQR"] = (usd < q1 - settings.iqr_multiplier * iqr) | (
        usd > q3 + settings.iqr_multiplier * iqr
    )
    product = _codes(validated["product_id"])
    count = (
        pd.Series(np.bincount(product)[product], index=validated.index) if len(product) else log_usd
    )
    p_weights = customer_weights(customers, validated.index, within=product)
    p_deviations = (log_usd - grouped_weighted_median(log_usd, p_weights, product)).abs()
    known = p_deviations.notna().to_numpy()
    weighted_sum = np.bincount(
        product, weights=np.where(known, p_deviations.to_numpy() * p_weights.to_numpy(), 0.0)
    )
    weight_sum = np.bincount(product, weights=np.where(known, p_weights.to_numpy(), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean_ad = pd.Series((weighted_sum / weight_sum)[product], index=validated.index)
    z = robust_z(p_deviations, grouped_weighted_median(p_deviations, p_weights, product), p_mean_ad)
    flags["PRODUCT_MAD"] = (
        (count >= settings.min_product_transactions) & (z > settings.robust_z)
    ).fillna(False)
    per_customer = np.bincount(customers)[customers] if len(customers) else np.array([], np.int64)
    flags["HIGH_FREQUENCY_CUSTOMER"] = (
        per_customer > settings.max_customer_transactions
    ) & validated["customer_id"].notna().to_numpy()
    return flags.astype(bool)
