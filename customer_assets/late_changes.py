"""The sensor ``source_changes``: re-runs a loaded week whose source rows changed after it was loaded
(a refund, an edit, a late row), then the weeks after it, and a week carried without the week
before it (weeks run at once or out of order)."""

import hashlib
import json

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from customer_assets import tables
from customer_assets.alerts import Alerts
from customer_assets.assets.common import metadata_value
from customer_assets.assets.extract import SOURCE_TRANSACTIONS
from customer_assets.assets.history import HISTORY
from customer_assets.partitions import latest_materialization, week_bounds, weekly_partitions
from customer_assets.resources.postgres import PostgresSource
from customer_assets.schedules import weekly_pipeline_job
from customer_assets.settings import PipelineSettings, source_configured
from customer_assets.sources.extract import EMPTY_WEEK_VERSION, shrinkage, week_version

RAW = dg.AssetKey(["etl", "raw_transactions"])
IDENTITY = tables.key(tables.CUSTOMER_IDENTITY_MAP)
HISTORY_STEP = "__".join(HISTORY.path)


def stale_identity(instance: dg.DagsterInstance, week: str, before: str) -> str | None:
    """Why the identity of ``week`` is stale, if it is: it was carried from a week older than the
    week ``before`` it, which is loaded now (the weeks ran at once or out of order). An identity
    carried from a later week (an older week re-run) is as meant."""
    identity = latest_materialization(instance, IDENTITY, week)
    if identity is None or latest_materialization(instance, IDENTITY, before) is None:
        return None
    carried_from = str(metadata_value(identity, "carried_from") or "")
    if carried_from == before or carried_from > week:
        return None
    return (
        f"identity carried from {carried_from}, not from the week before ({before}), loaded since"
    )


def weeks_to_repair(
    instance: dg.DagsterInstance, weeks: list[str], source_versions: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The loaded weeks among ``weeks`` (oldest first) to re-run, and why the first of them must.

    A week must re-run when its source version differs from the one its extract read (late change),
    or when its carried history was built from something other than the previous week's latest
    history (an earlier week re-ran after it, or it was built by a full rescan before that week
    existed), or its identity carried from a week older than the previous one (``stale_identity``).
    Every loaded week after the first such week re-runs too: their lifetime figures and profiles
    include it.
    """
    reasons: dict[str, str] = {}
    loaded = []
    previous_history = None
    for before, week in zip([None, *weeks], weeks, strict=False):
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
        if before is not None and (why := stale_identity(instance, week, before)):
            reasons.setdefault(week, why)
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
