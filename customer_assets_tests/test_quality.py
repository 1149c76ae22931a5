"""The quality report, metrics row and the outcomes of the asset checks."""

import pandas as pd
import pytest

from customer_assets.logic import checks
from customer_assets.logic.quality import build_quality_report, metrics_row, quality_status
from customer_assets.logic.validation import flag_validated, split_by_hard_rules
from customer_assets.schemas import DataQualityMetrics
from customer_assets_tests.frames import WEEK, raw_frame, raw_row


@pytest.mark.parametrize("rate,status", [(0.0, "pass"), (0.049, "pass"), (0.05, "warn"), (0.10, "warn"), (0.101, "fail")])
def test_status_thresholds(rate, status):
    assert quality_status(rate, 0.05, 0.10) == status


def test_row_conservation_check():
    assert checks.row_conservation(10, 7, 3).passed
    broken = checks.row_conservation(10, 7, 2)
    assert not broken.passed and broken.severity == "ERROR" and "off by 1" in broken.description


def test_quarantine_rate_check_fails_warns_and_passes():
    assert checks.quarantine_rate(11, 100, 0.05, 0.10).severity == "ERROR"
    assert not checks.quarantine_rate(11, 100, 0.05, 0.10).passed
    warn = checks.quarantine_rate(6, 100, 0.05, 0.10)
    assert not warn.passed and warn.severity == "WARN"
    assert checks.quarantine_rate(4, 100, 0.05, 0.10).passed
    assert checks.quarantine_rate(0, 0, 0.05, 0.10).passed


def test_report_counts_by_category_and_metrics_row():
    rows = [raw_row(transaction_id=f"T{i}", customer_id=f"C{i}") for i in range(8)]
    rows += [raw_row(transaction_id="BAD1", amount=None), raw_row(transaction_id="BAD2", currency="ABC")]
    split = split_by_hard_rules(raw_frame(*rows), WEEK)
    validated, anomalies, status, flags = flag_validated(split.validated, WEEK)
    report = build_quality_report(WEEK, split.failures, flags, anomalies, status, 0.05, 0.10)
    assert (report["total_records"], report["passed_records"], report["quarantined_records"]) == (10, 8, 2)
    assert report["quality_score"] == 80.0 and report["status"] == "fail"
    assert set(report["checks"]) == {"completeness", "validity", "consistency", "anomalies"}
    assert report["category_pass_rates"] == {"completeness": 0.9, "validity": 0.9, "consistency": 1.0}
    assert report["quarantine_reasons"] == {"MISSING_AMOUNT": 1, "INVALID_CURRENCY": 1}
    missing = next(c for c in report["checks"]["completeness"] if c["code"] == "MISSING_AMOUNT")
    assert (missing["passed"], missing["failed"]) == (9, 1)
    row = metrics_row(report, 1.5)
    DataQualityMetrics.validate(row)
    assert row.loc[0, "week_start"] == pd.Timestamp("2026-11-16") and row.loc[0, "quarantined_records"] == 2
