"""Sensors: clean up after failed runs; re-run a week when late event files land for it."""


import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from customer_assets.assets.summary import remove_intermediates, write_log
from customer_assets.hooks import RECORD_TAG
from customer_assets.partitions import weekly_partitions
from customer_assets.schedules import weekly_pipeline_job
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
    """Backstop of the in-run cleanup hooks: for a failed run they did not record (a worker killed, a run
    that failed before any step), writes `failed_YYYYMMDD_HHMMSS.json` and removes the week's intermediates."""
    if RECORD_TAG in context.dagster_run.tags:
        context.log.info(f"run {context.dagster_run.run_id} already recorded its failure: "
                         f"{context.dagster_run.tags[RECORD_TAG]}")
        return
    record = failure_record(context)
    week = record["week_start"]
    if week:
        removed, remaining = remove_intermediates(settings, week)
        record["left_behind"] = removed + remaining
        record["cleanup"] = {"removed": len(removed), "remaining": remaining}
        record["reports_dir"] = str(settings.week_reports_dir(week))
    path = write_log(settings, "failed", record)
    context.log.info(f"failure of run {record['run_id']} recorded in {path}")


def new_event_files(root: Path, cursor: dict) -> tuple[list[Path], dict]:
    """Files of the landing zone that the cursor has not seen, and the cursor after them.

    The cursor keeps the newest modification time seen and the files that carry it, so a file written in
    the same instant as the last one seen is still picked up once, and never twice.
    """
    last = int(cursor.get("mtime_ns", 0))
    seen_at_last = set(cursor.get("files_at_mtime", []))
    fresh = []
    for path in root.glob("dt=*/*"):
        if not path.is_file() or path.suffix not in (".json", ".jsonl"):
            continue
        mtime = path.stat().st_mtime_ns
        if mtime > last or (mtime == last and str(path) not in seen_at_last):
            fresh.append((mtime, path))
    if not fresh:
        return [], cursor
    newest = max(m for m, _ in fresh)
    at_newest = {str(p) for m, p in fresh if m == newest} | (seen_at_last if newest == last else set())
    return [p for _, p in sorted(fresh)], {"mtime_ns": newest, "files_at_mtime": sorted(at_newest)}


def weeks_touched(files: list[Path]) -> dict[str, int]:
    """Week partition keys whose events may sit in these files, with the newest mtime of each.

    A day folder feeds its own week, and a Sunday folder also the next one (late files of Monday's events).
    """
    weeks: dict[str, int] = {}
    for path in files:
        try:
            day = datetime.strptime(path.parent.name, "dt=%Y-%m-%d").date()
        except ValueError:
            continue
        for fed in (day, day + timedelta(days=1)):
            key = (fed - timedelta(days=fed.weekday())).isoformat()
            weeks[key] = max(weeks.get(key, 0), path.stat().st_mtime_ns)
    return weeks


@dg.sensor(name="events_landing_zone", job=weekly_pipeline_job, minimum_interval_seconds=300,
           default_status=dg.DefaultSensorStatus.STOPPED)
def events_landing_zone(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Re-runs a finished week when new event files land for it (late arrivals), once per batch of files."""
    root = Path(settings.events_path)
    if not root.is_dir():
        return dg.SkipReason(f"no landing zone at {root}")
    files, cursor = new_event_files(root, json.loads(context.cursor or "{}"))
    if not files:
        return dg.SkipReason("no new event files")
    complete = set(weekly_partitions.get_partition_keys())
    weeks = weeks_touched(files)
    requests = [dg.RunRequest(run_key=f"events:{week}:{mtime}", partition_key=week,
                              tags={"trigger": "events_landing_zone"})
                for week, mtime in sorted(weeks.items()) if week in complete]
    context.update_cursor(json.dumps(cursor))
    if not requests:
        return dg.SkipReason(f"{len(files)} new file(s), none for a finished week yet")
    return requests
