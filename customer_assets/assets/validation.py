"""Validate: hard rules quarantine, statistical rules flag; a quality report and metrics row per week."""


import time

import dagster as dg
import pandas as pd

from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import (
    ETL, OWNERS, PARTITIONS, WAREHOUSE, WAREHOUSE_KIND, check_result, check_spec, finished_week, intermediate, selected_events,
    week_context)
from customer_assets.logic import checks
from customer_assets.logic.quality import build_quality_report, metrics_row, report_json, report_markdown
from customer_assets.io_managers.frames import BATCH_ROWS, FrameBatches
from customer_assets.logic.validation import validate_week
from customer_assets.io_managers.types import (
    DataQualityMetricsType, QuarantinedTransactionsType, TransactionAnomaliesType, ValidatedTransactionsBatchesType,
    check_validated_transactions)
from customer_assets.settings import PipelineSettings

VALIDATED = dg.AssetKey([ETL, "validated_transactions"])


@dg.multi_asset(
    outs={
        "validated_transactions": dg.AssetOut(key=VALIDATED, is_required=False, owners=OWNERS, kinds={"pandera", "pandas"}, dagster_type=ValidatedTransactionsBatchesType,
                                              description="Rows that passed every hard rule, anomalies flagged."),
        "quarantined_transactions": dg.AssetOut(key_prefix=[ETL], is_required=False, owners=OWNERS, kinds={"pandas"}, dagster_type=QuarantinedTransactionsType,
                                                description="Rows that failed a hard rule, with reason codes."),
        "transaction_anomalies": dg.AssetOut(key_prefix=[ETL], is_required=False, owners=OWNERS, kinds={"pandas"}, dagster_type=TransactionAnomaliesType,
                                             description="Validated rows flagged by a statistical rule."),
        "quality_report": dg.AssetOut(key_prefix=[ETL], is_required=False, owners=OWNERS, kinds={"json"}, description="The week's data-quality report."),
        "data_quality_metrics": dg.AssetOut(
            key_prefix=[WAREHOUSE], is_required=False, owners=OWNERS, kinds={"pandas", WAREHOUSE_KIND}, io_manager_key="warehouse_io_manager", dagster_type=DataQualityMetricsType,
            metadata={"partition_expr": "week_start"},
            description="History of data quality: one row per week, rewritten when the week reruns."),
    },
    ins={"raw_transactions": intermediate("raw_transactions")},
    partitions_def=PARTITIONS,
    # Subsettable so that a step with nothing to do (its week finished) may yield nothing, checks included.
    can_subset=True,
    group_name="quality",
    check_specs=[
        check_spec("row_conservation", VALIDATED, blocking=True,
                          description="Extracted rows = validated + quarantined."),
        check_spec("quarantine_rate", VALIDATED, blocking=True,
                          description="Hard failures under the stop threshold (default 10%, warn from 5%)."),
    ],
)
def validate_transactions(context: dg.AssetExecutionContext, settings: PipelineSettings, alerts: Alerts,
                          raw_transactions: pd.DataFrame):
    """Check the week: completeness, validity, consistency quarantine; anomalies only flag.

    Writes `quality_report.json` and `anomalies.csv` under the week's reports dir. A blocking check stops
    everything downstream when more than 10% of the rows fail a hard rule. The validated rows are written a
    slice of the week at a time, each slice checked against the ValidatedTransactions model.
    """
    if finished_week(context, raw_transactions):
        return
    yield from selected_events(context, _validate_week(context, settings, alerts, raw_transactions))


def _validate_week(context: dg.AssetExecutionContext, settings: PipelineSettings, alerts: Alerts,
                   raw_transactions: pd.DataFrame):
    started = time.monotonic()
    ctx = week_context(context)
    week = validate_week(raw_transactions, ctx, settings.max_amount_usd)
    split, outcome, anomalies = week.split, week.anomalies, week.anomaly_table
    validated = FrameBatches(week.batches(BATCH_ROWS), check=check_validated_transactions,
                             unique=["transaction_id"], name="validated_transactions")
    report = build_quality_report(ctx, split.failures, outcome.flags, anomalies, outcome.status,
                                  settings.quality_warn_rate, settings.quality_fail_rate)
    week_dir = settings.week_reports_dir(context.partition_key)
    (week_dir / "quality_report.json").write_text(report_json(report))
    anomalies.to_csv(week_dir / "anomalies.csv", index=False)

    yield dg.Output(validated, output_name="validated_transactions",
                    metadata={"flagged_rows": len(outcome.flagged)})
    yield dg.Output(split.quarantined.reset_index(drop=True), output_name="quarantined_transactions",
                    metadata={"dagster/row_count": len(split.quarantined),
                              "reasons": dg.MetadataValue.json(report["quarantine_reasons"])})
    yield dg.Output(anomalies, output_name="transaction_anomalies",
                    metadata={"dagster/row_count": len(anomalies), "anomaly_detection": outcome.status,
                              "csv": dg.MetadataValue.path(str((week_dir / "anomalies.csv").resolve()))})
    yield dg.Output(report, output_name="quality_report", metadata={
        "quality_score": report["quality_score"],
        "total_records": report["total_records"],
        "quarantined_records": report["quarantined_records"],
        "flagged_records": report["flagged_records"],
        "status": report["status"],
        "checks": dg.MetadataValue.md(report_markdown(report)),
        "report_json": dg.MetadataValue.path(str((week_dir / "quality_report.json").resolve())),
    })
    metrics = metrics_row(report, time.monotonic() - started)
    # Percentages throughout, like the quality score, rounded for reading; the table keeps full fractions.
    yield dg.Output(metrics, output_name="data_quality_metrics", metadata={
        "quality_score": round(float(report["quality_score"]), 2),
        "quarantine_rate_pct": round(100.0 * float(report["quarantine_rate"]), 3),
        **{f"{k}_pass_rate_pct": round(100.0 * float(v), 3) for k, v in report["category_pass_rates"].items()},
    })
    extracted, quarantined = len(raw_transactions), len(split.quarantined)
    results = [
        check_result(VALIDATED, "row_conservation",
                     checks.row_conservation(extracted, split.validated_count, quarantined),
                     extracted=extracted, validated=split.validated_count, quarantined=quarantined),
        check_result(VALIDATED, "quarantine_rate", checks.quarantine_rate(
            quarantined, extracted, settings.quality_warn_rate, settings.quality_fail_rate),
            quarantine_rate_pct=round(100.0 * report["quarantine_rate"], 3)),
    ]
    alert_failed_checks(alerts, [r for r in results if r.severity == dg.AssetCheckSeverity.ERROR],
                        context.partition_key, context.log)
    yield from results
