"""The order in which the local executor starts ready steps (``step_threads.py``): the critical
path first.

Dagster orders ready steps by ``dagster/priority``, then by the order they became ready. Among steps
of one priority the executor starts the one with the most work still after it: the longest path
from the step to the end of the plan, each step weighing its duration in the job's last successful
run (read from the instance), or one step each before there is one. So when a thread frees up, the
chain the run ends with (the week's events, the identity, the profiles, the facts, the marts) goes
before a leaf (a copy into the warehouse, a check), and of two chains as long in steps, the slower.

Steps that hold week-wide frames may also be limited to a few at a time (``with_week_wide_limit``,
the setting WEEK_WIDE_STEPS_AT_ONCE), in every deployment; in production each step's process is forked
from a server that imported the definitions once in the run (``with_forked_steps``). Both fill the
run's executor configuration through ``with_config_defaults``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg
from dagster._core.execution.context.system import PlanExecutionContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.storage.tags import PRIORITY_TAG


def last_durations(instance: dg.DagsterInstance, job_name: str) -> dict[str, float]:
    """Each step's seconds in the job's last successful run (none before the first). A hint only:
    if the instance cannot say, the run goes on without it (steps counted instead). A step that
    waited for the week before (``week_order.py``) weighs its wait too; those steps head the
    longest chains anyway."""
    try:
        runs = instance.get_runs(
            dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
        )
        stats = instance.get_run_step_stats(runs[0].run_id) if runs else []
    except Exception as exc:  # storage unreadable: order by steps, never fail the run for it
        logging.getLogger(__name__).warning(f"step durations unavailable ({exc}): ordered by steps")
        return {}
    return {
        step.step_key: step.end_time - step.start_time
        for step in stats
        if step.start_time is not None and step.end_time is not None
    }


def remaining_work(
    execution_plan: ExecutionPlan, durations: dict[str, float]
) -> dict[str, tuple[float, int]]:
    """For each step of the plan, the longest path from it to the plan's end: its seconds (a step
    without a duration weighs the mean of the others, or one) and its number of steps."""
    steps = {step.key: step for step in execution_plan.get_steps_to_execute_in_topo_order()}
    default = sum(durations.values()) / len(durations) if durations else 1.0
    below: dict[str, tuple[float, int]] = {}  # the longest path after a step, the step left out
    work: dict[str, tuple[float, int]] = {}
    for key in reversed(list(steps)):  # every dependant of a step comes after it in this order
        seconds, count = below.get(key, (0.0, 0))
        work[key] = (durations.get(key, default) + seconds, count + 1)
        for upstream in steps[key].get_execution_dependency_keys():
            if upstream in steps:
                below[upstream] = max(below.get(upstream, (0.0, 0)), work[key])
    return work


def longest_path_first(
    execution_plan: ExecutionPlan, job_context: PlanExecutionContext
) -> Callable[[ExecutionStep], tuple]:
    """The sort key of the run's ready steps: priority, then the work after them
    (``remaining_work``)."""
    run = job_context.dagster_run
    work = remaining_work(execution_plan, last_durations(job_context.instance, run.job_name))

    def sort_key(step: ExecutionStep) -> tuple:
        seconds, count = work.get(step.key, (0.0, 0))
        return (-int(step.tags.get(PRIORITY_TAG, 0)), -seconds, -count)

    return sort_key


# A step that holds frames growing with the week's rows or its customers: by default such steps run
# beside each other (the week is shorter); ``with_week_wide_limit`` runs a few at a time (README
# "Scaling").
WEEK_WIDE_TAG = "customer_assets/week_wide"


def with_config_defaults(
    base: dg.ExecutorDefinition, fill: Callable[[dict], dict], description: str
) -> dg.ExecutorDefinition:
    """``base`` (same name and configuration schema), its run's executor configuration first passed
    through ``fill``, which adds what the run's configuration left out."""

    def create(init: dg.InitExecutorContext):
        config = fill(dict(init.executor_config))
        return base.executor_creation_fn(
            dg.InitExecutorContext(init.job, init.executor_def, config, init.instance)
        )

    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=base.config_schema,
        requirements=base.get_requirements,
        description=f"{base.description or base.name}; {description}",
        executor_creation_fn=create,
    )


def with_week_wide_limit(base: dg.ExecutorDefinition, at_once: int) -> dg.ExecutorDefinition:
    """``base`` running at most ``at_once`` steps tagged ``WEEK_WIDE_TAG`` at a time in every run,
    however launched (Dagster's own ``tag_concurrency_limits``, which the local threaded executor
    and the multiprocess one take), unless the run's configuration limits that tag itself; 0: ``base``."""
    if at_once <= 0:
        return base

    def fill(config: dict) -> dict:
        limits = list(config.get("tag_concurrency_limits") or [])
        if not any(limit.get("key") == WEEK_WIDE_TAG for limit in limits):
            config["tag_concurrency_limits"] = [*limits, {"key": WEEK_WIDE_TAG, "limit": at_once}]
        return config

    return with_config_defaults(base, fill, f"{at_once} week-wide step(s) at a time")


def with_forked_steps(base: dg.ExecutorDefinition, preload: str) -> dg.ExecutorDefinition:
    """The multiprocess executor ``base`` starting each step's process as a fork of a server that
    imported the module ``preload`` (the definitions) once in the run (its ``start_method:
    forkserver``), rather than as a new interpreter importing them again, unless the run's
    configuration names a start method. Importing the definitions takes about 4 s of CPU, paid
    otherwise by each of a week's ~30 steps."""

    def fill(config: dict) -> dict:
        if not config.get("start_method"):
            config["start_method"] = {"forkserver": {"preload_modules": [preload]}}
        return config

    return with_config_defaults(base, fill, f"steps forked from a server that imported {preload}")
