"""What a run leaves behind: the week's intermediates, when they go, and the logs that stay.

The intermediates (``$DATA_DIR/etl/<asset>/<week>.parquet|json``, or the same layout and the claims
under ``$CUSTOMER_ASSETS_INTERMEDIATES_URL``, a bucket) hold customer-level rows. They live no longer
than the run that wrote them, and no shorter than the last step of that run that can still read them:

1. **As the run goes.** Every asset step carries two hooks (``hooks.py``). When a step ends, successfully or
   not, ``sweep`` removes each intermediate of the week whose producer has ended and whose consumers in this
   run have all ended or can no longer run (a consumer downstream of a failed or skipped step, or of a step
   that ended without the output it needs, will be skipped by Dagster). A failed step never removes what a
   step of an independent branch still has to read, so that branch completes and loads.
2. **When the run ends.** The run's executor is wrapped (``with_final_sweep``): when its plan has finished,
   however it finished (success, a failed step, an interrupt), every intermediate of the run's weeks is
   removed. This runs in the run worker, so it holds for runs started from the CLI, the UI, the schedule or a
   sensor, with no daemon. ``dagster.materialize()`` (the Python API) brings its own executor: there the hooks'
   sweep alone applies, which removes everything once the last step of a run ends.
3. **After a crash.** A worker killed outright (``kill -9``, a lost machine) runs neither. Before it writes a
   week's first intermediate, a run claims the week (``$DATA_DIR/.run_claims/<week>/<run id>.json``: its
   process and host). At the start of every run, and in the sensor ``orphaned_intermediates``, the
   intermediates of a week that no live run claims are removed (``sweep_orphans``) and the dead run is
   recorded in ``failed_*.json``. A claim is live while its process runs (on this host), or, from another
   host, until the instance says its run ended. The run-failure sensor ``etl_failure_cleanup`` and the
   instance's run monitoring (``deploy/dagster.yaml``) mark such a run failed when a daemon runs.

A failure is recorded in ``$ETL_LOG_DIR/failed_YYYYMMDD_HHMMSS.json``, in one shape
(``failure_record``) whoever records it: the hook of the first failed step, the run-failure sensor
``etl_failure_cleanup`` for a run no hook recorded, or the orphan sweep. Later sweeps of the same run
add what they removed to it, and steps that fail later are added as ``other_failed_steps``. The week
of a run is read here only (``run_week``, ``run_weeks``), and every log of the ETL log directory is
written by ``write_log`` (the run summary, the erasure and rekey records too).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.executor.base import Executor

from customer_assets.io_managers.intermediate_root import (
    IntermediateFile,
    IntermediateRoot,
    home_root,
    intermediate_roots,
)
from customer_assets.settings import PipelineSettings

ETL = "etl"
CLAIMS = ".run_claims"
RECORD_TAG = "customer_assets/failure_record"
PARTITION_TAG = "dagster/partition"
_ENDED = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
}


def write_log(settings: PipelineSettings, prefix: str, payload: dict) -> Path:
    """``<etl_log_dir>/<prefix>_YYYYMMDD_HHMMSS.json`` (microseconds added if that name is taken)."""
    log_dir = Path(settings.etl_log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    path = log_dir / f"{prefix}_{now:%Y%m%d_%H%M%S}.json"
    if path.exists():
        path = log_dir / f"{prefix}_{now:%Y%m%d_%H%M%S_%f}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def failure_record(
    settings: PipelineSettings,
    week: str | None,
    recorded_by: str,
    *,
    run: dg.DagsterRun | None = None,
    step: str | None = None,
    error: str | None = None,
    removed: Iterable[str] = (),
    remaining: Iterable[str] = (),
    **extra,
) -> dict:
    """The one shape of ``failed_*.json``, whoever records the failure (``recorded_by``: the failed
    step's hook ``run``, the sensor ``run failure sensor``, the ``orphan sweep``): the run, its week
    and failed step, the error, the intermediates removed and those still present (paths), and where
    the week's reports are. Later sweeps of the run add to it (``add_to_record``)."""
    return {
        "status": "failed",
        "run_id": run.run_id if run else None,
        "job": run.job_name if run else None,
        "week_start": week,
        "step": step,
        "error": error,
        "removed": list(removed),
        "remaining": list(remaining),
        "reports_dir": str(Path(settings.reports_dir, week)) if week else None,
        "recorded_by": recorded_by,
        **extra,
    }


def write_failure_record(settings: PipelineSettings, record: dict) -> Path:
    return write_log(settings, "failed", record)


def intermediate_files(
    settings: PipelineSettings, week: str, key: dg.AssetKey | None = None
) -> list[IntermediateFile]:
    """The week's intermediate files (of one asset, or of all), temporary files of an interrupted
    write included: on the local disk and, with intermediates_url, the bucket's objects."""
    folder = key.path if key else [ETL]
    return sorted(
        IntermediateFile(path, root)
        for root in intermediate_roots(settings)
        for path in root.files(*folder, pattern=f"{week}.*", recursive=not key)
    )


# Report files that list customers, written for the operator during the run (seed 000's anomalies.csv): they go
# with the last intermediate of the week. The rows stay queryable in the warehouse (flagged_transactions).
CUSTOMER_LEVEL_REPORTS = ("anomalies.csv",)


def customer_level_reports(settings: PipelineSettings, week: str) -> list[Path]:
    return [
        p
        for name in CUSTOMER_LEVEL_REPORTS
        if (p := Path(settings.reports_dir, week, name)).exists()
    ]


def remove_intermediates(
    settings: PipelineSettings, week: str, keys: Iterable[dg.AssetKey] | None = None
) -> tuple[list[str], list[str]]:
    """Delete the week's intermediate files (of ``keys``, or all of them and the customer-level reports); return
    (removed, still present)."""
    paths = (
        [p for key in keys for p in intermediate_files(settings, week, key)]
        if keys is not None
        else intermediate_files(settings, week) + customer_level_reports(settings, week)
    )
    removed = []
    for path in paths:
        path.unlink(missing_ok=True)
        removed.append(str(path))
    return removed, [str(p) for p in paths if p.exists()]


def intermediates_written(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetKey]:
    """The intermediates a run wrote (materializations stored by the Parquet manager, which says so)."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=100_000
    ).records
    materializations = [r.event_log_entry.asset_materialization for r in records]
    return sorted(
        {m.asset_key for m in materializations if m and "intermediate" in m.metadata},
        key=lambda k: k.to_user_string(),
    )


def claim_week(root: IntermediateRoot, week: str, run_id: str) -> None:
    """Mark the week's intermediates as being written by this run, in this process (see the module
    docstring); the claim lies beside them (in their bucket, if any), where every pod sees it."""
    path = root.path(CLAIMS, week, f"{run_id}.json")
    if not root.exists(path):
        root.write_text(
            path,
            json.dumps(
                {
                    "run_id": run_id,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "claimed_at": datetime.now(timezone.utc).isoformat(),
                }
            ),
        )


def release_claims(root: IntermediateRoot, run_id: str, weeks: Iterable[str]) -> None:
    for week in weeks:
        root.delete(root.path(CLAIMS, week, f"{run_id}.json"))


def _alive(claim: dict, instance: dg.DagsterInstance | None) -> bool:
    if claim.get("host") == socket.gethostname():
        try:
            os.kill(int(claim["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True  # a process of another user, or a claim that cannot tell: leave it alone
        return True
    run = instance.get_run_by_id(claim["run_id"]) if instance is not None else None
    return run is None or not run.is_finished


def sweep_orphans(
    settings: PipelineSettings,
    instance: dg.DagsterInstance | None = None,
    keep_run: str | None = None,
) -> dict[str, list[str]]:
    """Remove the intermediates of every week that no live run claims (a run killed outright left them), and
    record each such week in ``failed_*.json``; ``keep_run``'s own weeks are never touched."""
    weeks = {p.name.split(".")[0] for p in intermediate_files(settings, "*")}
    home = home_root(settings)
    swept = {}
    for week in sorted(weeks):
        claims = [json.loads(home.read_text(p)) for p in home.files(CLAIMS, week, pattern="*.json")]
        if any(c["run_id"] == keep_run or _alive(c, instance) for c in claims):
            continue
        removed, remaining = remove_intermediates(settings, week)
        for claim in claims:
            release_claims(home, claim["run_id"], [week])
        write_failure_record(
            settings,
            failure_record(
                settings,
                week,
                "orphan sweep",
                removed=removed,
                remaining=remaining,
                error="the run(s) that wrote these intermediates ended without cleaning up (a worker killed "
                "outright?)",
                runs=[c["run_id"] for c in claims],
            ),
        )
        swept[week] = removed
    return swept


def run_week(run: dg.DagsterRun | None) -> str | None:
    """The week of a run of one partition (its ``dagster/partition`` tag); None for a range or for
    no partition."""
    return (run.tags.get(PARTITION_TAG) or None) if run is not None else None


def run_weeks(run: dg.DagsterRun | None) -> list[str]:
    """The weeks a run works on: its partition, or each week of its partition range."""
    if run is None:
        return []
    if run_week(run):
        return [run_week(run)]
    tags = run.tags
    start, end = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    if start and end:
        from customer_assets.partitions import weekly_partitions

        return list(weekly_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    return []


@dataclass(frozen=True)
class IntermediateGraph:
    """Which op writes each intermediate, and which ops read it as an input: taken from the definitions, so
    an asset added later is covered without a list to keep."""

    producer: dict[dg.AssetKey, str] = field(default_factory=dict)
    consumers: dict[dg.AssetKey, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, assets: Iterable) -> IntermediateGraph:
        producer: dict[dg.AssetKey, str] = {}
        consumers: dict[dg.AssetKey, set[str]] = {}
        executable = [a for a in assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
        for assets_def in executable:
            for key in assets_def.keys:
                if key.path[0] == ETL:
                    producer[key] = assets_def.op.name
        for assets_def in executable:
            for name, key in assets_def.keys_by_input_name.items():
                if key in producer and not assets_def.op.ins[name].dagster_type.is_nothing:
                    consumers.setdefault(key, set()).add(assets_def.op.name)
        return cls(producer, {k: frozenset(v) for k, v in consumers.items()})


@dataclass
class RunProgress:
    """Where a run is: its plan's steps and their upstream steps, and which steps ended and how."""

    steps: set[str]
    upstream: dict[str, set[tuple[str, str]]]
    succeeded: set[str]
    ended: set[str]
    outputs: set[tuple[str, str]]

    @classmethod
    def of(
        cls,
        instance: dg.DagsterInstance,
        run: dg.DagsterRun,
        current: str | None = None,
        current_succeeded: bool = False,
    ) -> RunProgress:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        upstream = {
            step.key: {
                (h.step_key, h.output_name) for i in step.inputs for h in i.upstream_output_handles
            }
            for step in plan.steps
        }
        succeeded, ended, outputs = set(), set(), set()
        for record in instance.get_records_for_run(
            run.run_id, of_type={*_ENDED, DagsterEventType.STEP_OUTPUT}, limit=100_000
        ).records:
            event = record.event_log_entry.dagster_event
            if event.event_type == DagsterEventType.STEP_OUTPUT:
                outputs.add((event.step_key, event.step_output_data.step_output_handle.output_name))
                continue
            ended.add(event.step_key)
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                succeeded.add(event.step_key)
        if current:
            ended.add(current)
            (succeeded.add if current_succeeded else succeeded.discard)(current)
        return cls(set(plan.step_keys_to_execute), upstream, succeeded, ended, outputs)

    def can_still_run(self, step: str, seen: frozenset[str] = frozenset()) -> bool:
        """Not ended, and not bound to be skipped: every upstream step may still run or gave what is needed."""
        if step not in self.steps or step in self.ended or step in seen:
            return False
        for upstream, output in self.upstream.get(step, ()):
            if upstream in self.ended:
                if upstream not in self.succeeded or (upstream, output) not in self.outputs:
                    return False
            elif not self.can_still_run(upstream, seen | {step}):
                return False
        return True


def no_longer_needed(graph: IntermediateGraph, progress: RunProgress) -> list[dg.AssetKey]:
    """Intermediates whose producer is done in this run and that no step of the run can still read."""
    done = []
    for key, producer in graph.producer.items():
        if producer in progress.steps and producer not in progress.ended:
            continue
        if not any(progress.can_still_run(step) for step in graph.consumers.get(key, ())):
            done.append(key)
    return done


def add_to_record(
    instance: dg.DagsterInstance, run_id: str, removed: list[str], remaining: list[str], **extra
) -> Path | None:
    """Add what was removed (and, for a failed step, its error) to the run's failure record, if it has one."""
    run = instance.get_run_by_id(run_id)
    path = Path(run.tags[RECORD_TAG]) if run and run.tags.get(RECORD_TAG) else None
    if path is None or not path.exists():
        return None
    record = json.loads(path.read_text())
    for key, value in extra.items():
        record.setdefault(key, []).append(value)
    record["removed"] = sorted(set(record.get("removed", [])) | set(removed))
    record["remaining"] = remaining
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def sweep(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    settings: PipelineSettings,
    graph: IntermediateGraph,
    current: str | None = None,
    current_succeeded: bool = False,
    final: bool = False,
) -> list[str]:
    """Remove the run's intermediates that no step of it can still read (all of them when ``final``)."""
    keys = (
        None
        if final
        else no_longer_needed(graph, RunProgress.of(instance, run, current, current_succeeded))
    )
    removed, remaining = [], []
    for week in run_weeks(run):
        removed += remove_intermediates(settings, week, keys)[0]
        left = [str(p) for p in intermediate_files(settings, week)]
        if not left:
            removed += remove_intermediates(settings, week)[
                0
            ]  # the customer-level reports go with the last
            release_claims(home_root(settings), run.run_id, [week])
        remaining += left
    add_to_record(instance, run.run_id, removed, remaining)
    return removed


class FinalSweepExecutor(Executor):
    """An executor that runs another and, when the plan is done however it ended, removes the run's
    intermediates (see the module docstring)."""

    def __init__(self, inner: Executor, settings: PipelineSettings, graph: IntermediateGraph):
        self.inner, self.settings, self.graph = inner, settings, graph

    @property
    def retries(self):
        return self.inner.retries

    @property
    def step_dependency_config(self):
        return self.inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator:
        orphans = sweep_orphans(self.settings, plan_context.instance, keep_run=plan_context.run_id)
        for week, removed in orphans.items():
            plan_context.log.warning(
                f"removed {len(removed)} intermediate file(s) of week {week} left by a run "
                "that ended without cleaning up (recorded in failed_*.json)"
            )
        try:
            yield from self.inner.execute(plan_context, execution_plan)
        finally:
            run = plan_context.instance.get_run_by_id(plan_context.run_id)
            removed = sweep(plan_context.instance, run, self.settings, self.graph, final=True)
            release_claims(home_root(self.settings), run.run_id, run_weeks(run))
            if removed:
                plan_context.log.info(
                    f"run ended: removed {len(removed)} intermediate file(s) of "
                    f"{', '.join(run_weeks(run))}"
                )


def with_final_sweep(
    base: dg.ExecutorDefinition, settings: PipelineSettings, graph: IntermediateGraph
) -> dg.ExecutorDefinition:
    """``base`` (same name and configuration), with the run's intermediates removed when its plan ends."""
    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=base.config_schema,
        requirements=base.get_requirements,
        description=f"{base.description or base.name}; removes the run's intermediates when it ends",
        executor_creation_fn=lambda init: FinalSweepExecutor(
            base.executor_creation_fn(init), settings, graph
        ),
    )
