"""The local deployment's executor: the run's steps in its one process, as the in-process executor
runs them, with independent steps on a few threads at once.

DuckDB allows one writing process per file, so the local deployment cannot spread a run's steps over
processes; and the multiprocess executor's per-step process costs more than the steps here (measured:
a demo week of 29 steps took 25 s with it, against 9 s in process). Threads keep the one process and
still let the profile inputs (the CRM, the ERP, the events) run while the transaction branch does:
the heavy parts (the source's ``COPY``, pyarrow, DuckDB, pandas' kernels) release the GIL.

The plan is Dagster's own (``ActiveExecution``: dependencies, priorities, retries, skips, the
``max_concurrent`` and ``tag_concurrency_limits`` of the multiprocess executor's configuration), and
each step runs through Dagster's ``dagster_event_sequence_for_step`` as in process. Only the main
thread touches the plan: a step's thread hands its events over a queue. Hooks run on the main thread
once their step has ended, as the in-process executor runs them.

A termination (the UI's, SIGTERM) is seen by the main thread: no step starts after it, and each
running step is interrupted at its next Python instruction (a C call, such as one DuckDB statement,
ends first), so its ``finally`` blocks run and it fails as interrupted, as in process.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, StepExecutionContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import _trigger_hook, dagster_event_sequence_for_step
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.base import Executor

DEFAULT_THREADS = 2
# How often the main thread looks for a termination while the steps run.
POLL_SECONDS = 0.2


@dataclass
class _Running:
    context: StepExecutionContext
    thread: threading.Thread | None = None
    events: list[DagsterEvent] = field(default_factory=list)


class _Ended:
    """What a step's thread puts last: its error, if Dagster's own step machinery raised."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def _run_step(key: str, context: StepExecutionContext, out: queue.Queue) -> None:
    try:
        for event in dagster_event_sequence_for_step(context):
            out.put((key, event))
    except BaseException as error:  # re-raised on the main thread
        out.put((key, _Ended(error)))
    else:
        out.put((key, _Ended()))


def _interrupt(thread: threading.Thread) -> None:
    """Raise DagsterExecutionInterruptedError in ``thread`` at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(DagsterExecutionInterruptedError)
    )


def _threaded_iterator(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    threads: int,
    tag_concurrency_limits: list[dict] | None,
) -> Iterator[DagsterEvent]:
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with (
        InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency,
        execution_plan.start(
            retry_mode=job_context.retry_mode,
            max_concurrent=threads,
            tag_concurrency_limits=tag_concurrency_limits,
            instance_concurrency_context=concurrency,
            step_dependency_config=job_context.step_dependency_config,
        ) as active,
        ExitStack() as capture_stack,
    ):
        # the process's output captured for the whole run, as in process
        log_key = compute_log_manager.build_log_key_for_run(
            job_context.run_id, create_compute_log_file_key()
        )
        log_context = capture_stack.enter_context(compute_log_manager.capture_logs(log_key))
        yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)

        events: queue.Queue = queue.Queue()
        running: dict[str, _Running] = {}
        stopping = False
        try:
            # until every step's end is handled: its hooks run after the plan is complete
            while running or not active.is_complete:
                if not stopping and not active.is_complete:
                    for step in active.get_steps_to_execute():
                        context = job_context.for_step(step, active.get_known_state())
                        running[step.key] = entry = _Running(context)
                        entry.thread = threading.Thread(
                            target=_run_step,
                            args=(step.key, context, events),
                            name=f"step {step.key}",
                            daemon=True,
                        )
                        entry.thread.start()
                yield from active.concurrency_event_iterator(job_context)
                if not running:
                    if stopping:
                        break
                    active.sleep_til_ready()
                    continue
                if not stopping and active.check_for_interrupts():
                    stopping = True
                    active.mark_interrupted()
                    yield DagsterEvent.engine_event(
                        job_context,
                        "Threaded executor: received termination signal - interrupting the running steps",
                        EngineEventData.interrupted(list(running)),
                    )
                    for entry in running.values():
                        _interrupt(entry.thread)
                try:
                    key, item = events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                entry = running[key]
                if not isinstance(item, _Ended):
                    entry.events.append(item)
                    yield item
                    active.handle_event(item)
                    continue
                del running[key]
                interrupted = isinstance(item.error, DagsterExecutionInterruptedError)
                if item.error is not None and not (stopping and interrupted):
                    raise item.error
                active.verify_complete(job_context, key)
                for event in active.plan_events_iterator(job_context):
                    entry.events.append(event)
                    yield event
                yield from _trigger_hook(entry.context, entry.events)
        finally:
            # an error on the main thread (or a framework error of a step) ends the run: the
            # other steps are interrupted and waited for, so nothing of the run outlives it
            for entry in running.values():
                _interrupt(entry.thread)
            for entry in running.values():
                entry.thread.join()
        if stopping:
            raise DagsterExecutionInterruptedError()


class ThreadedExecutor(Executor):
    """Dagster's in-process execution of the run's plan, with up to ``threads`` steps at once."""

    def __init__(
        self, retries: RetryMode, threads: int, tag_concurrency_limits: list[dict] | None = None
    ):
        self._retries = retries
        self.threads = threads
        self.tag_concurrency_limits = tag_concurrency_limits

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(self, plan_context, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()}) on up to {self.threads} threads",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=lambda job_context, execution_plan: _threaded_iterator(
                    job_context, execution_plan, self.threads, self.tag_concurrency_limits
                ),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                ),
            )
        )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )


@dg.executor(
    name="threaded_in_process",
    config_schema={
        "max_concurrent": dg.Field(
            int,
            default_value=DEFAULT_THREADS,
            description="How many steps run at once, each on a thread of the run's process (1: one "
            "at a time, as the in-process executor).",
        ),
        "tag_concurrency_limits": dg.Field(
            list,
            is_required=False,
            description="As the multiprocess executor's: at most `limit` running steps with a tag "
            "`key` (of value `value`).",
        ),
        "retries": get_retries_config(),
    },
)
def threaded_executor(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
    """The run's steps in its one process, up to ``max_concurrent`` at once on threads."""
    config = init_context.executor_config
    return ThreadedExecutor(
        retries=RetryMode.from_config(config["retries"]),
        threads=max(1, config["max_concurrent"]),
        tag_concurrency_limits=config.get("tag_concurrency_limits"),
    )
