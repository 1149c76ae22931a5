"""Sensors: clean up after failed runs and orphaned intermediates; re-run a week when late event
files land for it. The sensor that re-runs a week whose source changed is in ``late_changes.py``."""

import json
from datetime import timedelta
from pathlib import Path

import dagster as dg

from customer_assets import tables
from customer_assets.alerts import Alerts
from customer_assets.cleanup.claims import sweep_orphans
from customer_assets.cleanup.intermediates import remove_intermediates
from customer_assets.cleanup.records import RECORD_TAG, failure_record, write_failure_record
from customer_assets.cleanup.runs import run_week
from customer_assets.schedules import weekly_pipeline_job
from customer_assets.settings import PipelineSettings
from customer_assets.sources.landing_zone import folder_day, watched_files
from customer_assets.weeks import monday_of


def failed_step(context: dg.RunFailureSensorContext) -> tuple[str | None, str | None]:
    """The failed run's first failed step and its error (or the run's failure message)."""
    step, error = None, None
    for event in context.get_step_failure_events():
        step = event.step_key
        info = event.event_specific_data.error if event.event_specific_data else None
        error = info.message.strip() if info else None
        break
    if error is None and context.failure_event.message:
        error = context.failure_event.message
    return step, error


@dg.run_failure_sensor(
    name="etl_failure_cleanup",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Backstop of the in-run cleanup: for a failed run its hooks did not record (a "
    "worker killed, a run that failed before any step), writes failed_*.json, removes the week's "
    "intermediates and alerts.",
)
def etl_failure_cleanup(
    context: dg.RunFailureSensorContext, settings: PipelineSettings, alerts: Alerts
) -> None:
    """Backstop of the in-run cleanup hooks: for a failed run they did not record (a worker killed,
    a run that failed before any step), writes `failed_YYYYMMDD_HHMMSS.json` and removes the week's
    intermediates."""
    if RECORD_TAG in context.dagster_run.tags:
        context.log.info(
            f"run {context.dagster_run.run_id} already recorded its failure: "
            f"{context.dagster_run.tags[RECORD_TAG]}"
        )
        return
    run, (step, error) = context.dagster_run, failed_step(context)
    week = run_week(run)
    removed, remaining = remove_intermediates(settings, week) if week else ([], [])
    record = failure_record(
        settings,
        week,
        "run failure sensor",
        run=run,
        step=step,
        error=error,
        removed=removed,
        remaining=remaining,
    )
    path = write_failure_record(settings, record)
    context.log.info(f"failure of run {run.run_id} recorded in {path}")
    alerts.send(
        "run_failed",
        f"run {run.run_id[:8]} of {run.job_name} failed",
        week,
        {"step": step, "error": (error or "")[:500], "record": str(path)},
        context.log,
    )


@dg.sensor(
    name="orphaned_intermediates",
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Removes the intermediates of weeks that no live run claims (a worker killed "
    "outright left them) and records each in failed_*.json; every run also does this when it "
    "starts.",
)
def orphaned_intermediates(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Customer rows left on disk by a run that died without cleaning up go within one interval."""
    swept = sweep_orphans(settings, context.instance)
    for week, removed in swept.items():
        context.log.warning(f"removed {len(removed)} orphaned intermediate file(s) of week {week}")
    return dg.SkipReason(
        f"removed the orphaned intermediates of {sorted(swept)}"
        if swept
        else "no orphaned intermediates"
    )


def new_event_files(root: Path, cursor: dict) -> tuple[list[Path], dict]:
    """Files of the landing zone that the cursor has not seen, and the cursor after them.

    The cursor keeps the newest modification time seen and the files that carry it, so a file
    written in the same instant as the last one seen is still picked up once, and never twice.
    """
    last = int(cursor.get("mtime_ns", 0))
    seen_at_last = set(cursor.get("files_at_mtime", []))
    fresh = []
    for path in watched_files(root):
        mtime = path.stat().st_mtime_ns
        if mtime > last or (mtime == last and str(path) not in seen_at_last):
            fresh.append((mtime, path))
    if not fresh:
        return [], cursor
    newest = max(m for m, _ in fresh)
    at_newest = {str(p) for m, p in fresh if m == newest} | (
        seen_at_last if newest == last else set()
    )
    return [p for _, p in sorted(fresh)], {"mtime_ns": newest, "files_at_mtime": sorted(at_newest)}


def weeks_touched(files: list[Path]) -> dict[str, int]:
    """Week partition keys whose events may sit in these files, with the newest mtime of each.

    A day folder feeds its own week, and a Sunday folder also the next one (late files of Monday's
    events).
    """
    weeks: dict[str, int] = {}
    for path in files:
        day = folder_day(path.parent)
        if day is None:
            continue
        for fed in (day, day + timedelta(days=1)):
            key = monday_of(fed).isoformat()
            weeks[key] = max(weeks.get(key, 0), path.stat().st_mtime_ns)
    return weeks


LOADED = tables.key(tables.WEEKLY_CUSTOMER_PROFILES)


@dg.sensor(
    name="events_landing_zone",
    job=weekly_pipeline_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Re-runs a loaded week when event files land for it late (a batch of files: one "
    "run). Its first tick only notes the files already there: it never requests the landing zone's "
    "history.",
)
def events_landing_zone(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Re-runs a week whose profiles are loaded when new event files land for it (late arrivals),
    once per batch.

    The first tick (an empty cursor) takes every file already in the landing zone as seen and
    requests nothing: months of history must not become months of runs. Files for a week not loaded
    yet request nothing either: the schedule or a backfill loads that week, reading every file it
    has by then.
    """
    if settings.events_path is None:
        return dg.SkipReason("no event landing zone configured (EVENTS_PATH unset)")
    root = Path(settings.events_path)
    if not root.is_dir():
        return dg.SkipReason(f"no landing zone at {root}")
    first_tick = not context.cursor
    files, cursor = new_event_files(root, json.loads(context.cursor or "{}"))
    context.update_cursor(json.dumps(cursor or {"mtime_ns": 0, "files_at_mtime": []}))
    if first_tick:
        return dg.SkipReason(
            f"started watching {root}: {len(files)} file(s) already there taken as seen"
        )
    if not files:
        return dg.SkipReason("no new event files")
    loaded = context.instance.get_materialized_partitions(LOADED)
    weeks = weeks_touched(files)
    requests = [
        dg.RunRequest(
            run_key=f"events:{week}:{mtime}",
            partition_key=week,
            tags={"trigger": "events_landing_zone"},
        )
        for week, mtime in sorted(weeks.items())
        if week in loaded
    ]
    if not requests:
        return dg.SkipReason(
            f"{len(files)} new file(s), none for a loaded week (the schedule or a backfill "
            f"will read them): weeks {', '.join(sorted(weeks)) or 'none'}"
        )
    return requests
