"""Finish the week: a run summary in the ETL log dir, and no customer data left in intermediates."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster._core.events import DagsterEventType

from customer_assets import tables
from customer_assets.alerts import Alerts
from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WAREHOUSE,
    finished_week,
    intermediate,
    metadata_value,
)
from customer_assets.cleanup.intermediates import (
    intermediate_files,
    intermediates_written,
    remove_intermediates,
)
from customer_assets.cleanup.records import write_log
from customer_assets.dagster_types import PipelineErrorLogType, column_schema
from customer_assets.logic import error_log
from customer_assets.partitions import latest_materialization
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import PipelineErrorLog
from customer_assets.settings import PipelineSettings


def _not_removed(week: str, remaining: list[str]) -> dg.Failure:
    return dg.Failure(f"intermediate files of week {week} could not be removed: {remaining}")


def _week_sources(settings: PipelineSettings, week: str) -> list[str] | None:
    """Which sources fed the week's profiles, as the profile step recorded them."""
    path = Path(settings.reports_dir, week, "transform_log.json")
    return json.loads(path.read_text()).get("sources") if path.exists() else None


def _check_failures(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """The run's failed checks by severity (``WARN``, ``ERROR``), as ``asset:check``."""
    failed: dict[str, list[str]] = {"WARN": [], "ERROR": []}
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
    ).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            failed[evaluation.severity.value].append(
                f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            )
    return failed


def week_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseSQL, alerts: Alerts, summary: dict
) -> dict:
    """What the operator is told when a week succeeds (seeds 000 and 001): counts, quality,
    warnings, anomalies, new customers, where the table is, that the cleanup is done, and the run's
    page."""
    history = latest_materialization(
        context.instance, tables.key(tables.CUSTOMER_HISTORY), context.partition_key
    )
    load = summary["load"] or {}
    warnings = _check_failures(context.instance, context.run.run_id)["WARN"]
    return {
        "rows_extracted": summary["records_processed"],
        "rows_loaded": load.get("rows_loaded"),
        "rows_quarantined": summary["records_quarantined"],
        "quality_score": summary["quality_score"],
        "quality_status": summary["quality_status"],
        "warnings": len(warnings),
        "warning_checks": warnings,
        "anomalies": summary["records_flagged"],
        "new_customers": metadata_value(history, "new_customers"),
        "table": warehouse.table_url(tables.SCHEMA, tables.WEEKLY_TRANSACTIONS),
        "cleanup_confirmed": not summary["cleanup"]["remaining"],
        "run_url": alerts.run_url(context.run.run_id),
    }


def week_summary(settings: PipelineSettings, week: str, run_id: str, quality_report: dict) -> dict:
    """The run summary's account of the week, from the quality report and the reports the steps
    left in the week's reports dir (the load's, the profiles' sources); the cleanup, the analysts'
    copy and the report are added once done."""
    load_report_path = Path(settings.reports_dir, week, "load_report_weekly_transactions.json")
    return {
        "status": "success",
        "run_id": run_id,
        "week_start": week,
        "records_processed": quality_report["total_records"],
        "records_quarantined": quality_report["quarantined_records"],
        "records_flagged": quality_report["flagged_records"],
        "quality_score": quality_report["quality_score"],
        "quality_status": quality_report["status"],
        "quarantine_reasons": quality_report["quarantine_reasons"],
        "load": json.loads(load_report_path.read_text()) if load_report_path.exists() else None,
        "sources": _week_sources(settings, week),
        "reports_dir": str(Path(settings.reports_dir, week)),
    }


def _report_title(report: dict) -> str:
    return (
        f"week loaded: {report['rows_loaded']} rows ({report['rows_quarantined']} quarantined), "
        f"quality {report['quality_score']}, {report['warnings']} warning(s), "
        f"{report['anomalies']} anomalies, {report['new_customers']} new customers"
    )


# The run summary's step, made an asset by ``pipeline_summary_after`` once every other asset is known.
def pipeline_summary(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    warehouse: WarehouseSQL,
    alerts: Alerts,
    quality_report: dict,
):
    """After a successful week: summary to `logs/etl/etl_YYYYMMDD_HHMMSS.json`, intermediates
    deleted, and the week's report posted to ALERT_WEBHOOK_URL (`week_succeeded`; its fields are
    also in the summary's `report`).

    The intermediates hold customer data: most went as soon as no step of the run could read them
    (`cleanup/`); what is left goes here, before the summary is written, so that a failure while
    writing it leaves no customer data behind. `cleanup.removed` counts the intermediates the run
    wrote, all gone.
    """
    if finished_week(context, quality_report):
        # Steps re-run alone for a finished week may have written intermediates again: they go all
        # the same.
        removed, remaining = remove_intermediates(settings, context.partition_key)
        context.log.info(f"removed {len(removed)} intermediate file(s) of the finished week")
        if remaining:
            raise _not_removed(context.partition_key, remaining)
        return
    week = context.partition_key
    summary = week_summary(settings, week, context.run.run_id, quality_report)
    # Clean up first: a failure while writing the summary must not leave customer data behind.
    remove_intermediates(settings, week)
    written = intermediates_written(context.instance, context.run.run_id)
    remaining = [str(p) for p in intermediate_files(settings, week)]
    summary["cleanup"] = {"removed": len(written), "remaining": remaining}
    # Analysts read a copy published now, so that their connections never hold the file a run
    # writes.
    summary["analysts_read_copy"] = warehouse.publish_read_copy()
    summary["report"] = week_report(context, warehouse, alerts, summary)
    summary_path = write_log(settings, "etl", summary)
    # After the cleanup and the log: a webhook that fails never fails the week (send never raises).
    alerts.send(
        "week_succeeded", _report_title(summary["report"]), week, summary["report"], context.log
    )
    if remaining:
        raise _not_removed(week, remaining)
    yield dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.path(str(summary_path.resolve())),
            "records_processed": summary["records_processed"],
            "quality_score": float(summary["quality_score"]),
            "intermediates_removed": len(written),
            **(
                {"analysts_read_copy": dg.MetadataValue.path(summary["analysts_read_copy"])}
                if summary["analysts_read_copy"]
                else {}
            ),
        }
    )


SUMMARY = dg.AssetKey([ETL, "pipeline_summary"])
QUALITY_REPORT = dg.AssetKey([ETL, "quality_report"])  # an input of the summary


def _after_summary(assets: list[dg.AssetsDefinition]) -> set[dg.AssetKey]:
    """The keys that depend on the summary's, directly or through others."""
    found = {SUMMARY}
    while True:
        more = {
            key
            for a in assets
            for key, deps in a.asset_deps.items()
            if key not in found and deps & found
        }
        if not more:
            return found - {SUMMARY}
        found |= more


def pipeline_summary_after(deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """The run summary's asset, after ``deps`` (``with_summary_last``'s)."""
    return dg.asset(
        key_prefix=[ETL],
        ins={"quality_report": intermediate("quality_report", dict)},
        deps=deps,
        partitions_def=PARTITIONS,
        output_required=False,
        group_name="operations",
        kinds={"python"},
        owners=OWNERS,
    )(pipeline_summary)


def with_summary_last(assets: list) -> list:
    """The assets and the run summary, which waits for every other weekly asset that does not
    itself wait for it: the summary removes every file of the week under etl/ (intermediates, steps'
    working files) and publishes the analysts' copy of the warehouse, so no step of the week may
    still run or be about to write. Derived from the definitions, so that an asset added later is
    waited for without a list to keep. Every one is a dep, not only the nearest: a run of a selection
    without the nearest ones must still wait for the others it holds."""
    executable = [
        a
        for a in assets
        if isinstance(a, dg.AssetsDefinition)
        and a.is_executable
        and not isinstance(a, dg.AssetChecksDefinition)
    ]
    weekly = {key for a in executable if a.partitions_def is not None for key in a.keys}
    waiting = weekly - _after_summary(executable) - {SUMMARY, QUALITY_REPORT}
    return [*assets, pipeline_summary_after(sorted(waiting))]


ERROR_LOG_STEPS = sorted({step for step, _, _, _ in error_log.SOURCES})


@dg.asset(
    key_prefix=[WAREHOUSE],
    partitions_def=PARTITIONS,
    group_name="operations",
    kinds={"pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    dagster_type=PipelineErrorLogType,
    deps=[dg.AssetKey.from_user_string(s) for s in ERROR_LOG_STEPS],
    metadata={
        "partition_expr": "week_start",
        "dagster/column_schema": column_schema(PipelineErrorLog),
    },
)
def pipeline_error_log(context: dg.AssetExecutionContext) -> dg.Output:
    """`customer_analytics.pipeline_error_log`: the week's rejected, flagged and lost records per
    step and reason (step, severity, reason, record_count), from what each step recorded; replaced
    with the week."""
    week = context.partition_key
    records = {  # one record a step, however many of its entries the log reads
        step: latest_materialization(context.instance, dg.AssetKey.from_user_string(step), week)
        for step in dict.fromkeys(step for step, _, _, _ in error_log.SOURCES)
    }
    values = {
        (step, entry): metadata_value(records[step], entry)
        for step, entry, _, _ in error_log.SOURCES
    }
    rows = error_log.error_rows(pd.Timestamp(week), values)
    return dg.Output(
        rows,
        metadata={
            "dagster/row_count": len(rows),
            "errors": int(rows.loc[rows["severity"] == "ERROR", "record_count"].sum()),
            "warnings": int(rows.loc[rows["severity"] == "WARNING", "record_count"].sum()),
        },
    )
