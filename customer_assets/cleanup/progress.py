"""Which step writes and which steps read each intermediate, and where a run is: together they say
which intermediates no step of the run can still read (``no_longer_needed``), so that the sweep as
the run goes (point 1 of the package docstring) never removes what a step still has to read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.events import DagsterEventType

from customer_assets.cleanup.intermediates import ETL

_ENDED = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
}


@dataclass(frozen=True)
class IntermediateGraph:
    """Which op writes each intermediate, and which ops read it as an input: taken from the
    definitions, so an asset added later is covered without a list to keep."""

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

    def steps(self) -> set[str]:
        """The steps that write or read an intermediate."""
        return set(self.producer.values()).union(*self.consumers.values())


def _plan(instance: dg.DagsterInstance, snapshot_id: str) -> tuple[frozenset[str], dict]:
    """A run's plan: its steps and each one's upstream outputs. The snapshot's id is a hash of its
    content, so what was read once stays true (a step's hook reads it at every step's end)."""
    if snapshot_id not in _PLANS:
        plan = instance.get_execution_plan_snapshot(snapshot_id)
        upstream = {
            step.key: {
                (h.step_key, h.output_name) for i in step.inputs for h in i.upstream_output_handles
            }
            for step in plan.steps
        }
        _keep_last(_PLANS, snapshot_id, (frozenset(plan.step_keys_to_execute), upstream))
    return _PLANS[snapshot_id]


@dataclass
class _Read:
    """What a run's event log said so far of its steps' ends and outputs, and where to read on:
    the log only grows, so a hook reads the events after the last read made at least
    ``OVERLAP_SECONDS`` before, not the whole run's (which grow with its steps). The overlap: on
    PostgreSQL an event's id is drawn before its insert commits, so steps writing at once can make
    an event visible after one with a higher id; a read that missed it (an output missed would
    have its intermediate removed while a step still needs it) is covered by every read in the
    next seconds. The sets only grow, so reading an event twice changes nothing."""

    marks: list[tuple[float, str]] = field(default_factory=list)  # (when, cursor after the read)
    succeeded: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    outputs: set[tuple[str, str]] = field(default_factory=set)

    def add_new(self, instance: dg.DagsterInstance, run_id: str) -> None:
        now = time.monotonic()
        old = [mark for mark in self.marks if mark[0] <= now - OVERLAP_SECONDS]
        cursor = old[-1][1] if old else None
        self.marks = old[-1:] + [mark for mark in self.marks if mark[0] > now - OVERLAP_SECONDS]
        page = instance.get_records_for_run(
            run_id, cursor=cursor, of_type={*_ENDED, DagsterEventType.STEP_OUTPUT}
        )
        for record in page.records:
            event = record.event_log_entry.dagster_event
            if event.event_type == DagsterEventType.STEP_OUTPUT:
                handle = event.step_output_data.step_output_handle
                self.outputs.add((event.step_key, handle.output_name))
                continue
            self.ended.add(event.step_key)
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                self.succeeded.add(event.step_key)
        self.marks.append((now, page.cursor or cursor))


# The runs' events read so far, by run, and their plans, by snapshot (the last few of this process).
_READ: dict[str, _Read] = {}
_PLANS: dict[str, tuple[frozenset[str], dict]] = {}
_READ_LOCK = threading.Lock()
_RUNS_KEPT = 8


def _keep_last(cache: dict, key: str, value) -> None:
    """Put ``value`` last in ``cache`` (the most recent last) and drop the oldest entries past
    ``_RUNS_KEPT``."""
    cache[key] = value
    while len(cache) > _RUNS_KEPT:
        del cache[next(iter(cache))]


# How far back a read starts again (see _Read): far longer than an insert takes to commit.
OVERLAP_SECONDS = 5.0


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
        with _READ_LOCK:
            steps, upstream = _plan(instance, run.execution_plan_snapshot_id)
            read = _READ.pop(run.run_id, None) or _Read()
            read.add_new(instance, run.run_id)
            _keep_last(_READ, run.run_id, read)
            succeeded, ended = set(read.succeeded), set(read.ended)
            outputs = set(read.outputs)
        if current:
            ended.add(current)
            (succeeded.add if current_succeeded else succeeded.discard)(current)
        return cls(set(steps), upstream, succeeded, ended, outputs)

    def can_still_run(self, step: str, seen: frozenset[str] = frozenset()) -> bool:
        """Not ended, and not bound to be skipped: every upstream step may still run or gave what
        is needed."""
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
    """Intermediates whose producer is done in this run and that no step of the run can still
    read."""
    done = []
    for key, producer in graph.producer.items():
        if producer in progress.steps and producer not in progress.ended:
            continue
        if not any(progress.can_still_run(step) for step in graph.consumers.get(key, ())):
            done.append(key)
    return done
