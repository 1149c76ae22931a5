"""The week's data-quality report and its one-row metrics, from the validation outcome."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd

from customer_assets.logic.anomalies import ANOMALY_RULES
from customer_assets.logic.checks import quarantine_level
from customer_assets.logic.hard_rules import HARD_CATEGORIES, HARD_RULES
from customer_assets.weeks import WeekContext


def _checks(failures: pd.DataFrame, anomaly_flags: pd.DataFrame) -> dict[str, list[dict]]:
    """Each check's passed and failed rows by category: the hard rules (the quarantine) over every
    row, the anomaly rules (flags) over the rows that passed them."""
    total = len(failures)
    passed = total - (int(failures.any(axis=1).sum()) if total else 0)
    checks: dict[str, list[dict]] = {category: [] for category in (*HARD_CATEGORIES, "anomalies")}
    for rule in HARD_RULES:
        failed = int(failures[rule.code].sum()) if total else 0
        checks[rule.category].append(
            {
                "check": rule.description,
                "code": rule.code,
                "severity": "quarantine",
                "passed": total - failed,
                "failed": failed,
            }
        )
    for code, description in ANOMALY_RULES.items():
        flagged = int(anomaly_flags[code].sum()) if code in anomaly_flags else 0
        checks["anomalies"].append(
            {
                "check": description,
                "code": code,
                "severity": "flag",
                "passed": passed - flagged,
                "failed": flagged,
            }
        )
    return checks


def _category_pass_rates(failures: pd.DataFrame) -> dict[str, float]:
    """Per category of hard rules, the share of rows that fail none of its rules (1.0 if none)."""
    total = len(failures)
    rates = {}
    for category in HARD_CATEGORIES:
        codes = [r.code for r in HARD_RULES if r.category == category]
        failing = int(failures[codes].any(axis=1).sum()) if total else 0
        rates[category] = 1.0 if total == 0 else (total - failing) / total
    return rates


def build_quality_report(
    span: WeekContext,
    failures: pd.DataFrame,
    anomaly_flags: pd.DataFrame,
    anomalies: pd.DataFrame,
    anomaly_status: str,
    warn_rate: float,
    fail_rate: float,
    source_findings: dict | None = None,
) -> dict:
    """Totals, pass/fail per check grouped by category, a quality score and the flagged rows.

    ``source_findings`` is what the extract found in the source that is not the transactions' fault
    (``DUPLICATE_CUSTOMER_RECORD``, ``ID_COLLISION``, ``excluded_statuses``): reported as such,
    apart from the quarantine and the score."""
    total = len(failures)
    quarantined = int(failures.any(axis=1).sum()) if total else 0
    passed = total - quarantined
    checks = _checks(failures, anomaly_flags)
    quarantine_rate = 0.0 if total == 0 else quarantined / total
    reasons = failures.sum().astype(int)
    return {
        "week_start": span.week_start.isoformat(),
        "week_end": span.week_end.isoformat(),
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "total_records": total,
        "passed_records": passed,
        "quarantined_records": quarantined,
        "flagged_records": int(len(anomalies)),
        "quarantine_rate": quarantine_rate,
        "quality_score": round(100.0 * (1.0 - quarantine_rate), 2),
        "status": quarantine_level(quarantine_rate, warn_rate, fail_rate),
        "thresholds": {"warn_rate": warn_rate, "fail_rate": fail_rate},
        "category_pass_rates": _category_pass_rates(failures),
        "quarantine_reasons": {code: int(n) for code, n in reasons.items() if n},
        "checks": checks,
        "anomaly_detection": anomaly_status,
        "source_findings": dict(source_findings or {}),
        # Counts only: the flagged rows themselves (customer and transaction ids) are the warehouse
        # table flagged_transactions, never a file that outlives the run (issue 23).
        "flagged_by_rule": {item["code"]: item["failed"] for item in checks["anomalies"]},
    }


def metrics_row(
    report: dict, run_seconds: float, load_status: str = "loaded", run_id: str = ""
) -> pd.DataFrame:
    """The week's row of ``data_quality_metrics``. ``load_status`` says whether this attempt's rows
    go on to the warehouse ('loaded') or a blocking check stopped them ('blocked: quarantine_rate'),
    in which case the warehouse keeps the rows of an earlier run; ``run_id`` names the attempt."""
    rates = report["category_pass_rates"]
    return pd.DataFrame(
        {
            "week_start": [pd.Timestamp(report["week_start"]).tz_convert(None)],
            "total_records": [report["total_records"]],
            "passed_records": [report["passed_records"]],
            "quarantined_records": [report["quarantined_records"]],
            "flagged_records": [report["flagged_records"]],
            "quality_score": [float(report["quality_score"])],
            "completeness_pass_rate": [float(rates["completeness"])],
            "validity_pass_rate": [float(rates["validity"])],
            "consistency_pass_rate": [float(rates["consistency"])],
            "run_seconds": [float(run_seconds)],
            "computed_at": [pd.Timestamp.now(tz="UTC")],
            "loaded": [load_status == "loaded"],
            "load_status": [load_status],
            "run_id": [run_id],
        }
    )


def report_json(report: dict) -> str:
    """The report as indented JSON: aggregates only (counts per rule, category and reason)."""
    return json.dumps(report, indent=2, default=str)


def report_markdown(report: dict) -> str:
    """The report's checks as a markdown table: category, check, code, passed, failed."""
    lines = ["| category | check | code | passed | failed |", "|---|---|---|---|---|"]
    for category, items in report["checks"].items():
        lines += [
            f"| {category} | {c['check']} | {c['code']} | {c['passed']} | {c['failed']} |"
            for c in items
        ]
    findings = report.get("source_findings") or {}
    if findings:
        lines += ["", "Found in the source (not the transactions' fault):", ""]
        lines += [f"- {code}: {json.dumps(value)}" for code, value in findings.items()]
    return "\n".join(lines)
