"""Validate: hard rules quarantine, statistical rules flag; a quality report and metrics row per
week.

Which of the week's ids another loaded week holds (reused or moved) is asked in
``reused_ids.py``."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import (
    ETL,
    PARTITIONS,
    WAREHOUSE,
    WEEK_WIDE,
    check_result,
    check_spec,
    finished_week,
    intermediate,
    optional_out,
    selected_events,
    week_context,
)
from customer_assets.assets.reused_ids import held_in_other_weeks
from customer_assets.assets.week_rates import publish_week_rates
from customer_assets.dagster_types import (
    DataQualityMetricsType,
    QuarantinedTransactionsType,
    TransactionAnomaliesType,
    ValidatedTransactionsBatchesType,
    check_validated_transactions,
)
from customer_assets.frames import FrameBatches, StoredFrame
from customer_assets.io_managers.memory import release_freed_memory
from customer_assets.logic import checks
from customer_assets.logic.quality import (
    build_quality_report,
    metrics_row,
    report_json,
    report_markdown,
)
from customer_assets.logic.validation import (
    ValidationSplit,
    WeekValidation,
    validate_read,
)
from customer_assets.partitions import latest_materialization
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.rates import EcbRates
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings
from customer_assets.sources.ecb_rates import RatesInUse
from customer_assets.weeks import WeekContext

VALIDATED = dg.AssetKey([ETL, "validated_transactions"])


@dg.multi_asset(
    op_tags=WEEK_WIDE,
    outs={
        "validated_transactions": optional_out(
            key=VALIDATED,
            kinds={"pandera", "pandas"},
            dagster_type=ValidatedTransactionsBatchesType,
            description="Rows that passed every hard rule, anomalies flagged.",
        ),
        "quarantined_transactions": optional_out(
            kinds={"pandas"},
            dagster_type=QuarantinedTransactionsType,
            description="Rows that failed a hard rule, with reason codes.",
        ),
        "transaction_anomalies": optional_out(
            kinds={"pandas"},
            dagster_type=TransactionAnomaliesType,
            description="Validated rows flagged by a statistical rule.",
        ),
        "quality_report": optional_out(
            kinds={"json"}, description="The week's data-quality report."
        ),
        tables.DATA_QUALITY_METRICS: optional_out(
            key_prefix=[WAREHOUSE],
            kinds={"pandas"},
            io_manager_key="warehouse_io_manager",
            dagster_type=DataQualityMetricsType,
            metadata={"partition_expr": "week_start"},
            description="History of data quality: one row per week, "
            "rewritten when the week reruns.",
        ),
    },
    ins={"raw_transactions": intermediate("raw_transactions", StoredFrame)},
    partitions_def=PARTITIONS,
    # Subsettable so that a step with nothing to do (its week finished) may yield nothing, checks
    # included.
    can_subset=True,
    group_name="quality",
    check_specs=[
        check_spec(
            "row_conservation",
            VALIDATED,
            blocking=True,
            description="Extracted rows = validated + quarantined.",
        ),
        check_spec(
            "quarantine_rate",
            VALIDATED,
            blocking=True,
            description="Hard failures under the stop threshold (default 10%, warn from 5%).",
        ),
        check_spec(
            "fx_rates_cover_week",
            VALIDATED,
            description="Warns when the ECB rates in use end before "
            "the week's last publication day.",
        ),
    ],
)
def validate_transactions(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    alerts: Alerts,
    warehouse: WarehouseSQL,
    source_db: PostgresSource,
    rates: EcbRates,
    raw_transactions: StoredFrame,
):
    """Check the week: completeness, validity, consistency quarantine; anomalies only flag.

    Writes `quality_report.json` and `anomalies.csv` under the week's reports dir. A blocking check
    stops everything downstream when more than 10% of the rows fail a hard rule. The validated rows
    are written a batch of the week at a time, each checked against the ValidatedTransactions
    model. The week is read from the extract's file a batch at a time, never whole: its rules are
    decided batch by batch (those comparing rows across the week over the few rows whose ids repeat),
    its anomalies over the validated rows' ids and USD amounts.

    An id that another loaded week holds is a moved transaction only if the source no longer holds
    it in that week; otherwise it is a reused id, quarantined `DUPLICATE_ACROSS_WEEKS`, and never
    reaches the load (which would delete the other week's row as moved). The metrics row says
    whether this attempt's rows go on to the warehouse (`loaded`, `load_status`) and which run wrote
    it (`run_id`).

    Amounts are converted with the ECB rates the `rates` resource refreshes (at most one fetch a
    day; a pinned ECB_RATES_FILE never fetched over); the validated rows' metadata says which file.
    The week's later steps convert with the same file, published beside its intermediates.
    """
    if finished_week(context, raw_transactions):
        return
    held = held_in_other_weeks(
        context, warehouse, source_db, raw_transactions.read(["transaction_id"])
    )
    fx_rates = rates.refresh(context.log)
    # the week's later steps convert with this file, wherever they run (week_rates.py)
    shared = publish_week_rates(settings, context.partition_key, fx_rates.path)
    context.log.debug(f"the week's rates file: {shared}")
    yield from selected_events(
        context, _validate_week(context, settings, alerts, raw_transactions, fx_rates, held)
    )


def load_status(results: list[dg.AssetCheckResult]) -> str:
    """'loaded' when no blocking check stops the week (its rows go on to the warehouse in this run),
    else which checks blocked it (the warehouse keeps what an earlier run loaded)."""
    blocking = [
        r.check_name for r in results if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR
    ]
    return f"blocked: {', '.join(blocking)}" if blocking else "loaded"


RAW = dg.AssetKey([ETL, "raw_transactions"])
# What the extract found in the source, by its metadata key, as the quality report names it.
SOURCE_FINDINGS = {
    "duplicate_customer_records": "DUPLICATE_CUSTOMER_RECORD",
    "id_collisions": "ID_COLLISION",
    "excluded_statuses": "excluded_statuses",
}


def _source_findings(context: dg.AssetExecutionContext) -> dict:
    """The source findings of the week's extract (the materialization whose rows are validated),
    from its metadata: the extract reads them beside the rows, in the same snapshot."""
    record = latest_materialization(context.instance, RAW, context.partition_key)
    metadata = (
        record.asset_materialization.metadata if record and record.asset_materialization else {}
    )
    return {code: metadata[key].value for key, code in SOURCE_FINDINGS.items() if key in metadata}


def _validate_week(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    alerts: Alerts,
    raw_transactions: StoredFrame,
    rates: RatesInUse,
    held_elsewhere: frozenset[str] = frozenset(),
):
    """The week's outputs, its quality report and anomalies written beside its reports, its checks
    (a failed blocking one alerted), and last its metrics row, which says whether one blocked. The
    week's amounts are converted with ``rates``."""
    started = time.monotonic()
    span = week_context(context)
    week = validate_read(
        raw_transactions.numbered_batches,
        span,
        settings.max_amount_usd,
        held_elsewhere=held_elsewhere,
        rates_path=rates.path,
        between=release_freed_memory,
    )
    validated = FrameBatches(
        week.batches(),
        check=check_validated_transactions,
        unique=["transaction_id"],
        name="validated_transactions",
    )
    report = build_quality_report(
        span,
        week.split.failures,
        week.anomalies.flags,
        week.anomaly_table,
        week.anomalies.status,
        settings.quality_warn_rate,
        settings.quality_fail_rate,
        source_findings=_source_findings(context),
    )
    week_dir = settings.week_reports_dir(context.partition_key)
    (week_dir / "quality_report.json").write_text(report_json(report))
    week.anomaly_table.to_csv(week_dir / "anomalies.csv", index=False)
    yield from _week_outputs(validated, week, report, rates, week_dir)
    results = _validation_checks(span, settings, len(raw_transactions), week.split, report, rates)
    alert_failed_checks(
        alerts,
        [r for r in results if r.severity == dg.AssetCheckSeverity.ERROR],
        context.partition_key,
        context.log,
    )
    yield _metrics_output(report, time.monotonic() - started, results, context.run_id)
    yield from results


def _week_outputs(
    validated: FrameBatches, week: WeekValidation, report: dict, rates: RatesInUse, week_dir: Path
):
    """The validated rows, the quarantined ones, the anomalies and the quality report, each with
    the metadata the UI shows."""
    outcome, anomalies = week.anomalies, week.anomaly_table
    yield dg.Output(
        validated,
        output_name="validated_transactions",
        metadata={"flagged_rows": len(outcome.flagged), **rates.metadata()},
    )
    yield dg.Output(
        week.split.quarantined.reset_index(drop=True),
        output_name="quarantined_transactions",
        metadata={
            "dagster/row_count": len(week.split.quarantined),
            "reasons": dg.MetadataValue.json(report["quarantine_reasons"]),
        },
    )
    yield dg.Output(
        anomalies,
        output_name="transaction_anomalies",
        metadata={
            "dagster/row_count": len(anomalies),
            "anomaly_detection": outcome.status,
            "csv": dg.MetadataValue.path(str((week_dir / "anomalies.csv").resolve())),
        },
    )
    yield dg.Output(
        report,
        output_name="quality_report",
        metadata={
            "quality_score": report["quality_score"],
            "total_records": report["total_records"],
            "quarantined_records": report["quarantined_records"],
            "flagged_records": report["flagged_records"],
            "status": report["status"],
            "checks": dg.MetadataValue.md(report_markdown(report)),
            "report_json": dg.MetadataValue.path(str((week_dir / "quality_report.json").resolve())),
        },
    )


def _validation_checks(
    span: WeekContext,
    settings: PipelineSettings,
    extracted: int,
    split: ValidationSplit,
    report: dict,
    rates: RatesInUse,
) -> list[dg.AssetCheckResult]:
    """Rows conserved, the quarantine rate under its thresholds, the ECB rates covering the week."""
    quarantined = len(split.quarantined)
    return [
        check_result(
            VALIDATED,
            "row_conservation",
            checks.row_conservation(extracted, split.validated_count, quarantined),
            extracted=extracted,
            validated=split.validated_count,
            quarantined=quarantined,
        ),
        check_result(
            VALIDATED,
            "quarantine_rate",
            checks.quarantine_rate(
                quarantined, extracted, settings.quality_warn_rate, settings.quality_fail_rate
            ),
            quarantine_rate_pct=round(100.0 * report["quarantine_rate"], 3),
        ),
        check_result(
            VALIDATED,
            "fx_rates_cover_week",
            checks.fx_rates_cover_week(
                (pd.Timestamp(span.week_end) - pd.Timedelta(days=1)).date(),
                rates.last_rate_date,
                rates.origin,
            ),
            fx_rates_last_date=rates.last_rate_date.isoformat(),
        ),
    ]


def _metrics_output(
    report: dict, run_seconds: float, results: list[dg.AssetCheckResult], run_id: str
) -> dg.Output:
    """The week's row of data_quality_metrics, written after the checks: the row says whether a
    blocking one stopped this attempt (the warehouse then keeps the rows an earlier run loaded), so
    the metrics and weekly_transactions are never told apart."""
    status = load_status(results)
    metrics = metrics_row(report, run_seconds, load_status=status, run_id=run_id)
    # Percentages throughout, like the quality score, rounded for reading; the table keeps full
    # fractions.
    return dg.Output(
        metrics,
        output_name=tables.DATA_QUALITY_METRICS,
        metadata={
            "quality_score": round(float(report["quality_score"]), 2),
            "load_status": status,
            "quarantine_rate_pct": round(100.0 * float(report["quarantine_rate"]), 3),
            **{
                f"{k}_pass_rate_pct": round(100.0 * float(v), 3)
                for k, v in report["category_pass_rates"].items()
            },
        },
    )
