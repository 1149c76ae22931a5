"""Sensors: after a failed run, record what failed and still remove the week's customer data."""


import dagster as dg

from customer_assets.assets.summary import remove_intermediates, write_log
from customer_assets.settings import PipelineSettings


def failure_record(context: dg.RunFailureSensorContext) -> dict:
    """Step, error and run of a failed run (what the failure log says)."""
    run = context.dagster_run
    step, error = None, None
    for event in context.get_step_failure_events():
        step = event.step_key
        info = event.event_specific_data.error if event.event_specific_data else None
        error = info.message.strip() if info else None
        break
    if error is None and context.failure_event.message:
        error = context.failure_event.message
    return {"status": "failed", "run_id": run.run_id, "job": run.job_name,
            "week_start": run.tags.get("dagster/partition"), "step": step, "error": error}


@dg.run_failure_sensor(name="etl_failure_cleanup", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False)
def etl_failure_cleanup(context: dg.RunFailureSensorContext, settings: PipelineSettings) -> None:
    """Writes `failed_YYYYMMDD_HHMMSS.json` (step, error, what was left) and removes the week's intermediates."""
    record = failure_record(context)
    week = record["week_start"]
    if week:
        left = [str(p) for p in settings.week_intermediates(week)]
        removed, remaining = remove_intermediates(settings, week)
        record["left_behind"] = left
        record["cleanup"] = {"removed": len(removed), "remaining": remaining}
        record["reports_dir"] = str(settings.week_reports_dir(week))
    path = write_log(settings, "failed", record)
    context.log.info(f"failure of run {record['run_id']} recorded in {path}")
