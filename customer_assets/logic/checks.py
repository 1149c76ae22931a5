"""Outcomes of the asset checks, as plain values that tests can assert on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    severity: str  # "ERROR" or "WARN"
    description: str


def row_conservation(extracted: int, validated: int, quarantined: int) -> CheckOutcome:
    """Every extracted row is either validated or quarantined, exactly once."""
    balance = extracted - validated - quarantined
    return CheckOutcome(balance == 0, "ERROR",
                        f"extracted {extracted} = validated {validated} + quarantined {quarantined}"
                        + ("" if balance == 0 else f" (off by {balance})"))


def quarantine_rate(quarantined: int, total: int, warn_rate: float, fail_rate: float) -> CheckOutcome:
    """Stop the week above ``fail_rate`` of hard failures; warn from ``warn_rate``."""
    rate = 0.0 if total == 0 else quarantined / total
    text = f"{quarantined} of {total} rows quarantined ({rate:.2%}); warn at {warn_rate:.0%}, stop above {fail_rate:.0%}"
    if rate > fail_rate:
        return CheckOutcome(False, "ERROR", text + ": the source data looks broken, nothing downstream runs")
    if rate >= warn_rate:
        return CheckOutcome(False, "WARN", text)
    return CheckOutcome(True, "ERROR", text)


@dataclass(frozen=True)
class Band:
    """Where a weekly figure usually lies: mean ± k·σ of the previous weeks (the week itself excluded)."""

    mean: float
    std: float
    low: float
    high: float
    weeks: int


def trailing_band(previous: list[float], k: float = 3.0, min_weeks: int = 3) -> Band | None:
    """The band of ``previous`` (the trailing weeks, oldest first), or None with fewer than ``min_weeks``."""
    if len(previous) < min_weeks:
        return None
    n = len(previous)
    mean = sum(previous) / n
    std = (sum((v - mean) ** 2 for v in previous) / n) ** 0.5
    return Band(mean, std, mean - k * std, mean + k * std, n)


def within_band(name: str, value: float, previous: list[float], unit: str = "", k: float = 3.0) -> CheckOutcome:
    """WARN when ``value`` leaves the trailing band, or is zero while the previous weeks were not."""
    band = trailing_band(previous, k)
    if band is None:
        return CheckOutcome(True, "WARN", f"{name} {value:,.2f}{unit}: fewer than 3 earlier weeks, no band yet")
    text = (f"{name} {value:,.2f}{unit}; the previous {band.weeks} weeks: {band.mean:,.2f} ± {k:g}σ "
            f"({band.std:,.2f}) = [{band.low:,.2f}, {band.high:,.2f}]")
    if value == 0 and any(previous):
        return CheckOutcome(False, "WARN", text + ": zero while the previous weeks were not")
    if not band.low <= value <= band.high:
        return CheckOutcome(False, "WARN", text + ": outside the band")
    return CheckOutcome(True, "WARN", text)
