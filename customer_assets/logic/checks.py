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
