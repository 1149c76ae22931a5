"""The quality report, metrics row and the outcomes of the asset checks."""

import pandas as pd
import pytest

from customer_assets.logic import checks
from customer_assets.logic.quality import (
    build_quality_report,
    metrics_row,
    quarantine_level,
    report_markdown,
)
from customer_assets.schemas import DataQualityMetrics
from customer_assets_tests.support.frames import WEEK, raw_frame, raw_row, validate


@pytest.mark.parametrize(
    "rate,status", [(0.0, "pass"), (0.049, "pass"), (0.05, "warn"), (0.10, "warn"), (0.101, "fail")]
)
def test_status_thresholds(rate, status):
    assert quarantine_level(rate, 0.05, 0.10) == status


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


def test_warehouse_checks_pass_and_fail():
    assert checks.ids_unique(0, 26).passed
    assert (
        not checks.ids_unique(2, 26).passed
        and "2 transaction ids" in checks.ids_unique(2, 26).description
    )
    assert checks.rows_match(1195, 1195).passed
    assert not checks.rows_match(1195, 1194).passed
    assert (
        not checks.rows_match(3, None).passed
        and "no load recorded" in checks.rows_match(3, None).description
    )


def test_profile_checks_pass_warn_and_fail():
    assert checks.match_rate(0.95).passed
    warn = checks.match_rate(0.7)
    assert not warn.passed and warn.severity == "WARN" and "id formats" not in warn.description
    stop = checks.match_rate(0.3)
    assert not stop.passed and stop.severity == "ERROR" and "id formats" in stop.description
    assert checks.required_not_null({"customer_id": 0, "status": 0}).passed
    nulls = checks.required_not_null({"customer_id": 0, "status": 2})
    assert not nulls.passed and "'status': 2" in nulls.description
    assert checks.within_range("engagement score", 0, 100, 0.0, 100.0).passed
    assert checks.within_range("engagement score", 0, 100, None, None).passed  # an empty week
    assert not checks.within_range("engagement score", 0, 100, -1.0, 40.0).passed
    assert not checks.within_range("engagement score", 0, 100, 3.0, 100.5).passed
    assert checks.several_statuses({"active": 3, "churned": 1}).passed
    one = checks.several_statuses({"active": 4})
    assert not one.passed and one.severity == "WARN"


def test_report_counts_by_category_and_metrics_row():
    rows = [raw_row(transaction_id=f"T{i}", customer_id=f"C{i}") for i in range(8)]
    rows += [
        raw_row(transaction_id="BAD1", amount=None),
        raw_row(transaction_id="BAD2", currency="ABC"),
    ]
    _, week = validate(raw_frame(*rows))
    report = build_quality_report(
        WEEK,
        week.split.failures,
        week.anomalies.flags,
        week.anomaly_table,
        week.anomalies.status,
        0.05,
        0.10,
    )
    assert (report["total_records"], report["passed_records"], report["quarantined_records"]) == (
        10,
        8,
        2,
    )
    assert report["quality_score"] == 80.0 and report["status"] == "fail"
    assert set(report["checks"]) == {"completeness", "validity", "consistency", "anomalies"}
    assert report["category_pass_rates"] == {
        "completeness": 0.9,
        "validity": 0.9,
        "consistency": 1.0,
    }
    assert report["quarantine_reasons"] == {"MISSING_AMOUNT": 1, "INVALID_CURRENCY": 1}
    missing = next(c for c in report["checks"]["completeness"] if c["code"] == "MISSING_AMOUNT")
    assert (missing["passed"], missing["failed"]) == (9, 1)
    row = metrics_row(report, 1.5)
    DataQualityMetrics.validate(row)
    assert (
        row.loc[0, "week_start"] == pd.Timestamp("2026-11-16")
        and row.loc[0, "quarantined_records"] == 2
    )


def test_the_report_carries_what_the_extract_found_in_the_source():
    """Issue 21, items 3, 5 and 7: duplicate customer records, ids colliding once standardised and
    the rows of other statuses are the source's, not the transactions': the report says so, apart
    from the quarantine."""
    _, week = validate(raw_frame(raw_row()))
    findings = {
        "DUPLICATE_CUSTOMER_RECORD": 4,
        "ID_COLLISION": 1,
        "excluded_statuses": {"pending": 7},
    }
    report = build_quality_report(
        WEEK,
        week.split.failures,
        week.anomalies.flags,
        week.anomaly_table,
        week.anomalies.status,
        0.05,
        0.10,
        source_findings=findings,
    )
    assert report["source_findings"] == findings
    assert report["quarantined_records"] == 0 and report["quarantine_reasons"] == {}
    assert "DUPLICATE_CUSTOMER_RECORD" in report_markdown(report)
    bare = build_quality_report(
        WEEK,
        week.split.failures,
        week.anomalies.flags,
        week.anomaly_table,
        week.anomalies.status,
        0.05,
        0.10,
    )
    assert bare["source_findings"] == {}
