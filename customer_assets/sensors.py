"""Sensors: clean up after failed runs; re-run a week when late event files land for it, or when its
source rows changed after it was loaded."""

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from customer_assets import tables
from customer_assets.alerts import Alerts
from customer_assets.assets.common import metadata_value
from customer_assets.assets.extract import SOURCE_TRANSACTIONS
from customer_assets.assets.history import HISTORY
from customer_assets.cleanup.claims import sweep_orphans
from customer_assets.cleanup.intermediates import remove_intermediates
from customer_assets.cleanup.records import RECORD_TAG, failure_record, write_failure_record
from customer_assets.cleanup.runs import run_week
from customer_assets.partitions import latest_materialization, week_bounds, weekly_partitions
from customer_assets.resources.postgres import PostgresSource
from customer_assets.schedules import weekly_pipeline_job
from customer_assets.settings import PipelineSettings, source_configured
from customer_assets.sources.extract import EMPTY_WEEK_VERSION, shrinkage, week_version
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


RAW = dg.AssetKey(["etl", "raw_transactions"])
HISTORY_STEP = "__".join(HISTORY.path)


def weeks_to_repair(
    instance: dg.DagsterInstance, weeks: list[str], source_versions: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The loaded weeks among ``weeks`` (oldest first) to re-run, and why the first of them must.

    A week must re-run when its source version differs from the one its extract read (late change),
    or when its carried history was built from something other than the previous week's latest
    history (an earlier week re-ran after it, or it was built by a full rescan before that week
    existed). Every loaded week after the first such week re-runs too: their lifetime figures and
    profiles include it.
    """
    reasons: dict[str, str] = {}
    loaded = []
    previous_history = None
    for week in weeks:
        raw = latest_materialization(instance, RAW, week)
        history = latest_materialization(instance, HISTORY, week)
        if raw is not None:
            loaded.append(week)
            read = metadata_value(raw, "source_version")
            now = source_versions.get(week, EMPTY_WEEK_VERSION)
            if read is not None and read != now:
                reasons[week] = f"source changed: version {read} when loaded, {now} now"
        if history is not None and previous_history is not None:
            built_from = metadata_value(history, "previous_materialization_id")
            if built_from != previous_history.storage_id:
                reasons.setdefault(
                    week,
                    "carried history is stale: the week before was materialized again after it",
                )
        previous_history = history
    if not reasons:
        return [], {}
    first = min(reasons)
    return [w for w in loaded if w >= first], reasons


def late_changes_default() -> dg.DefaultSensorStatus:
    """On by default against a configured source. Off on the embedded demo: its data never changes
    by itself, and a sensor tick runs in the gRPC code server, where starting the embedded server
    (pg_ctl run as its system user) was seen to crash with SIGSEGV; `dagster asset materialize` and
    run workers start it fine. Asked when the definitions are built, not at import."""
    return dg.DefaultSensorStatus.RUNNING if source_configured() else dg.DefaultSensorStatus.STOPPED


def source_changes_sensor(default_status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    """The sensor ``source_changes`` (``repair_changed_weeks``), on or off by default as
    ``build_definitions`` decides (``late_changes_default``)."""
    return dg.sensor(
        name="source_changes",
        job=weekly_pipeline_job,
        minimum_interval_seconds=3600,
        default_status=default_status,
        description="Hourly: compares the recent weeks' source rows (count and checksum) with what "
        "was loaded and re-runs a week that changed (a refund, an edit, a late row), then the "
        "weeks after it.",
    )(repair_changed_weeks)


def observe_source(
    seen: dict, weeks: list[str], versions: dict[str, str]
) -> list[dg.AssetObservation]:
    """An observation of `source/transactions` for each week whose source version differs from
    the one the sensor saw last (``seen``, its cursor): the asset's data version follows the
    source."""
    return [
        dg.AssetObservation(
            asset_key=SOURCE_TRANSACTIONS.key,
            partition=week,
            tags={DATA_VERSION_TAG: versions.get(week, EMPTY_WEEK_VERSION)},
            metadata={"source_version": versions.get(week, EMPTY_WEEK_VERSION)},
        )
        for week in weeks
        if seen.get(week) != versions.get(week, EMPTY_WEEK_VERSION)
    ]


def shrunk_weeks(
    instance: dg.DagsterInstance, weeks: list[str], versions: dict[str, str], limit: float
) -> dict[str, str]:
    """The weeks among ``weeks`` whose source shrank sharply since they were loaded (to zero, or by
    more than ``limit``), with why: an archive or a purge, which no sensor repairs by itself."""
    return {
        week: why
        for week in weeks
        if (
            why := shrinkage(
                metadata_value(latest_materialization(instance, RAW, week), "source_version"),
                versions.get(week, EMPTY_WEEK_VERSION),
                limit,
            )
        )
    }


def alert_shrunk(
    context: dg.SensorEvaluationContext,
    alerts: Alerts,
    shrunk: dict[str, str],
    seen: dict,
    versions: dict[str, str],
) -> None:
    """Warns of each shrunk week on every tick, and alerts (`source_shrunk`) once per source
    version of the week, not every tick."""
    for week, why in shrunk.items():
        context.log.warning(f"not re-running {week}: {why}")
        # once per version, not every tick
        if seen.get(week) != versions.get(week, EMPTY_WEEK_VERSION):
            alerts.send(
                "source_shrunk",
                f"the source of a loaded week shrank: {why}; not repaired automatically",
                week,
                {
                    "to_repair": "re-run the week with run config ops: {etl__raw_transactions: "
                    "{config: {allow_shrink: true}}}, then the weeks after it"
                },
                context.log,
            )


def repair_requests(
    context: dg.SensorEvaluationContext,
    rerun: list[str],
    reasons: dict[str, str],
    versions: dict[str, str],
) -> list[dg.RunRequest]:
    """A run of each week of ``rerun`` (oldest first), its history step told why (`repair_reason`).
    The run keys name the first week, its reason and its source version, so one change is
    requested once."""
    first = rerun[0]
    key = hashlib.sha1(f"{first}|{reasons[first]}|{versions.get(first)}".encode()).hexdigest()[:12]
    requests = []
    for week in rerun:
        why = f"{week}: {reasons.get(week, f'its figures include {first}, which re-runs')}"
        context.log.info(f"re-running {why}")
        requests.append(
            dg.RunRequest(
                run_key=f"source_changes:{week}:{key}",
                partition_key=week,
                tags={"trigger": "source_changes", "customer_assets/repair_from": first},
                run_config={"ops": {HISTORY_STEP: {"config": {"repair_reason": why}}}},
            )
        )
    return requests


def repair_changed_weeks(
    context: dg.SensorEvaluationContext,
    settings: PipelineSettings,
    source_db: PostgresSource,
    alerts: Alerts,
):
    """Observes the source's recent weeks and re-runs a loaded week whose data changed since it was
    loaded (a refund, a status change, an edited amount, a late row), then every loaded week after
    it, whose carried history and profiles include it. Also repairs a carried history left stale by
    weeks run out of order.

    Looks back `LATE_CHANGE_WEEKS` weeks (default 8), one indexed query per week on the source, so
    its cost does not grow with history. `dagster sensor preview source_changes` shows what it would
    re-run.

    A loaded week whose source shrank sharply (to zero, or by more than `SOURCE_SHRINK_LIMIT`: an
    archive or a purge) is not repaired: it alerts (`source_shrunk`, once per source version) and
    re-runs neither that week nor the weeks after it, which wait for an operator's run with
    `allow_shrink: true`.
    """
    weeks = weekly_partitions.get_partition_keys()[-settings.late_change_weeks :]
    if not weeks:
        return dg.SkipReason("no complete week yet")
    with source_db.connect() as conn:
        schema = source_db.schema(conn, ("transactions",))
        versions = {week: week_version(conn, *week_bounds(week), schema) for week in weeks}
    seen = json.loads(context.cursor or "{}")
    observations = observe_source(seen, weeks, versions)
    context.update_cursor(
        json.dumps({week: versions.get(week, EMPTY_WEEK_VERSION) for week in weeks})
    )
    rerun, reasons = weeks_to_repair(context.instance, weeks, versions)
    shrunk = shrunk_weeks(context.instance, rerun, versions, settings.source_shrink_limit)
    alert_shrunk(context, alerts, shrunk, seen, versions)
    if shrunk:  # the weeks after a shrunk one build on it: they wait for the operator too
        rerun = [w for w in rerun if w < min(shrunk)]
    if not rerun:
        skip_reason = (
            f"source shrank sharply in {', '.join(sorted(shrunk))}: alerted, waiting for an "
            "operator's allow_shrink run"
            if shrunk
            else f"the {len(weeks)} recent weeks match the source and their history"
        )
        return dg.SensorResult(asset_events=observations, skip_reason=skip_reason)
    requests = repair_requests(context, rerun, reasons, versions)
    return dg.SensorResult(run_requests=requests, asset_events=observations)
