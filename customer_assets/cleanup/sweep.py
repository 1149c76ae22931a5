"""The sweep of a run's intermediates: as its steps end (called by the hooks of ``hooks.py``), and
when its plan ends, however it ended (the wrapped executor of ``with_final_sweep``); points 1 and 2
of the package docstring."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
from dagster._core.executor.base import Executor

from customer_assets.cleanup.claims import claim_week, release_claims, sweep_orphans
from customer_assets.cleanup.intermediates import intermediate_files, remove_intermediates
from customer_assets.cleanup.progress import IntermediateGraph, RunProgress, no_longer_needed
from customer_assets.cleanup.records import add_to_record
from customer_assets.cleanup.runs import run_weeks
from customer_assets.io_managers.intermediate_root import home_root
from customer_assets.settings import PipelineSettings


def sweep(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    settings: PipelineSettings,
    graph: IntermediateGraph,
    current: str | None = None,
    current_succeeded: bool = False,
    final: bool = False,
) -> list[str]:
    """Remove the run's intermediates that no step of it can still read (all of them when
    ``final``). The customer-level reports and the run's claim on its weeks go only once no step
    of the run that writes or reads an intermediate can still run: between two steps a week may
    have nothing on disk yet (a step that loads straight into the warehouse ended before the first
    intermediate was written), and a claim ended then would leave the rest of the run's files to
    the orphan sweep."""
    progress = None if final else RunProgress.of(instance, run, current, current_succeeded)
    keys = None if progress is None else no_longer_needed(graph, progress)
    ended = progress is None or not any(
        progress.can_still_run(step) for step in graph.steps() & progress.steps
    )
    removed, remaining = [], []
    for week in run_weeks(run):
        removed += remove_intermediates(settings, week, keys)[0]
        left = [str(p) for p in intermediate_files(settings, week)]
        if not left and ended:
            removed += remove_intermediates(settings, week)[0]
            release_claims(home_root(settings), run.run_id, [week])
        remaining += left
    add_to_record(run, removed, remaining)
    return removed


class FinalSweepExecutor(Executor):
    """An executor that runs another and, when the plan is done however it ended, removes the run's
    intermediates (see the package docstring)."""

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
        # The run's claim names this process, which lives as long as the run: under the multiprocess
        # executor a step's process ends with its step, and its claim would look like a dead run's.
        for week in run_weeks(plan_context.dagster_run):
            claim_week(home_root(self.settings), week, plan_context.run_id)
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
    """``base`` (same name and configuration), with the run's intermediates removed when its plan
    ends."""
    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=base.config_schema,
        requirements=base.get_requirements,
        description=f"{base.description or base.name}; removes the run's intermediates when it ends",
        executor_creation_fn=lambda init: FinalSweepExecutor(
            base.executor_creation_fn(init), settings, graph
        ),
    )
