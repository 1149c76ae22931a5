"""The local deployment's executor: the run's steps in its one process, as the in-process executor
runs them, with independent steps on a few threads at once.

DuckDB allows one writing process per file, so the local deployment cannot spread a run's steps
over processes; and the multiprocess executor's per-step process costs more than the steps here
(measured: a demo week of 29 steps took 25 s with it, against 9 s in process). Threads keep the
one process and still let the profile inputs (the CRM, the ERP, the events) run while the
transaction branch does: the heavy parts (the source's ``COPY``, pyarrow, DuckDB, pandas' kernels)
release the GIL.

The plan is Dagster's own (``ActiveExecution``: dependencies, priorities, retries, skips, the
``max_concurrent`` and ``tag_concurrency_limits`` of the multiprocess executor's configuration), and
each step runs through Dagster's ``dagster_event_sequence_for_step`` as in process; among ready steps
of one priority, the one with the most work after it starts first (``step_order.py``). Only the main
thread touches the plan: a step's thread hands its events over a queue. Hooks run on the main thread
once their step has ended, as the in-process executor runs them.

A termination (the UI's, SIGTERM) is seen by the main thread: no step starts after it, the running
steps end (seconds here), and the run ends interrupted. A second termination interrupts the running
steps at their next Python instruction (``PyThreadState_SetAsyncExc``; a C call, such as one DuckDB
statement, ends first): their ``finally`` blocks run and they fail as interrupted. That is a last
resort: an exception raised at an arbitrary instruction may leave a library's lock held (a logging
handler's, say), which the in-process executor's interruption, raised only at Dagster's own
boundaries, does not risk.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, StepExecutionContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import (
    _handle_compute_log_setup_error,
    _handle_compute_log_teardown_error,
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.step_dependency_config import (
    StepDependencyConfig,
    get_step_dependency_config_field,
)
from dagster._core.execution.tags import get_tag_concurrency_limits_config
from dagster._core.executor.in_process import InProcessExecutor

from customer_assets.duck import step_connections
from customer_assets.step_order import longest_path_first

DEFAULT_THREADS = 2
# A step with this tag runs with no other step beside it: the ready steps wait until it ends, and it
# waits for the running ones. The source's read takes it (``SOURCE_READ``, ``assets/common.py``): it
# holds a snapshot open on the production database for as long as it runs, and it shares the two
# cores with the server's backend, not with the week's other work.
RUNS_ALONE_TAG = "customer_assets/runs_alone"
# How often the main thread looks for a termination while the steps run.
POLL_SECONDS = 0.2


# The events after which a step's own code has ended: the rest is bookkeeping (its ``_Ended``).
_STEP_ENDS = (
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_UP_FOR_RETRY,
)


@dataclass
class _Running:
    context: StepExecutionContext
    thread: threading.Thread
    events: list[DagsterEvent] = field(default_factory=list)
    done: bool = False  # its success, failure or retry is handled: never interrupted after it
    interrupted: bool = False


def _runs_alone(step) -> bool:
    return step.tags.get(RUNS_ALONE_TAG) == "true"


class _Ended:
    """What a step's thread puts last: its error, if Dagster's own step machinery raised."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def _run_step(key: str, context: StepExecutionContext, out: queue.SimpleQueue) -> None:
    error = None
    try:
        with step_connections():  # the warehouse file opened once for the step
            for event in dagster_event_sequence_for_step(context):
                out.put((key, event))
    except BaseException as exc:  # re-raised on the main thread
        error = exc
    finally:
        out.put((key, _Ended(error)))


def _interrupt(entry: _Running) -> None:
    """Raise DagsterExecutionInterruptedError in a running step's thread at its next Python
    instruction, once: the last resort of a second termination (see the module docstring)."""
    if entry.done or entry.interrupted or not entry.thread.is_alive():
        return
    entry.interrupted = True
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(entry.thread.ident), ctypes.py_object(DagsterExecutionInterruptedError)
    )


class _Steps:
    """The run's running steps, each on its thread, and what they send: only the main thread calls
    these methods, and only it touches the plan (``active``)."""

    def __init__(self, job_context: PlanExecutionContext, active):
        self.job_context, self.active = job_context, active
        self.events: queue.SimpleQueue = queue.SimpleQueue()  # a put is one C call: never half-done
        self.running: dict[str, _Running] = {}
        self.held = None  # a step that runs alone, taken from the plan, waiting for the others
        self.terminations = 0

    def start_ready(self) -> None:
        """Start the steps the plan has ready, unless the run is terminated; not while a step's end
        is still to be handled, so that its hooks run before any step that depends on it starts, as
        in process. A step that runs alone (``RUNS_ALONE_TAG``) starts once the running ones have
        ended, and none starts beside it."""
        if self.terminations or any(entry.done for entry in self.running.values()):
            return
        if self.held is not None:
            if self.running:
                return
            step, self.held = self.held, None
            self._start(step)
        while not any(_runs_alone(entry.context.step) for entry in self.running.values()):
            ready = self.active.get_steps_to_execute(limit=1)  # highest priority first
            if not ready:
                return
            if _runs_alone(ready[0]) and self.running:
                self.held = ready[0]
                return
            self._start(ready[0])

    def _start(self, step) -> None:
        context = self.job_context.for_step(step, self.active.get_known_state())
        thread = threading.Thread(
            target=_run_step,
            args=(step.key, context, self.events),
            name=f"step {step.key}",
            daemon=True,
        )
        self.running[step.key] = _Running(context, thread)
        thread.start()

    def terminated(self) -> Iterator[DagsterEvent]:
        """A termination: the first lets the running steps end, a later one interrupts them."""
        self.terminations += 1
        self.active.mark_interrupted()
        yield DagsterEvent.engine_event(
            self.job_context,
            "Threaded executor: received termination signal - "
            + (
                "no step starts now; the running steps end first (terminate again to interrupt "
                "them)"
                if self.terminations == 1
                else "interrupting the running steps"
            ),
            EngineEventData.interrupted([k for k, e in self.running.items() if not e.done]),
        )
        if self.terminations > 1:
            for entry in self.running.values():
                _interrupt(entry)

    def receive(self) -> tuple[str, DagsterEvent | _Ended] | None:
        """The next event or end a step sent, if one comes within ``POLL_SECONDS``. A thread that
        died without its ``_Ended`` (an interruption raised before the put) is ended all the same,
        so the run never waits for it."""
        try:
            return self.events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            lost = [key for key, entry in self.running.items() if not entry.thread.is_alive()]
            for key in lost if self.events.empty() else ():
                error = (
                    DagsterExecutionInterruptedError()
                    if self.running[key].interrupted
                    else RuntimeError(f"the thread of step {key} ended without its end")
                )
                self.events.put((key, _Ended(error)))
            return None

    def handle(self, key: str, item: DagsterEvent | _Ended) -> Iterator[DagsterEvent]:
        """A step's event, handled by the plan as in process; or its end: the plan's skips, then its
        hooks."""
        entry = self.running[key]
        if not isinstance(item, _Ended):
            entry.events.append(item)
            yield item
            if not entry.done:  # a failure after its end (an interruption) is not handled
                self.active.handle_event(item)
            entry.done = entry.done or item.event_type in _STEP_ENDS
            return
        del self.running[key]
        entry.thread.join()
        interrupted = isinstance(item.error, DagsterExecutionInterruptedError)
        if item.error is not None and not (entry.interrupted and interrupted):
            raise item.error
        self.active.verify_complete(self.job_context, key)
        for event in self.active.plan_events_iterator(self.job_context):
            entry.events.append(event)
            yield event
        if not entry.interrupted:  # as in process: no hook for an interrupted step
            yield from _trigger_hook(entry.context, entry.events)

    def stop(self) -> None:
        """Whatever ended the loop, no step of the run outlives it: the running ones are
        interrupted (an error ended it) and waited for."""
        for entry in self.running.values():
            _interrupt(entry)
        for entry in self.running.values():
            entry.thread.join()


def _execute(steps: _Steps) -> Iterator[DagsterEvent]:
    """The plan to its end: until every step's end is handled (its hooks run after the plan is
    complete), or a termination's running steps ended."""
    active = steps.active
    while steps.running or not active.is_complete:
        if active.check_for_interrupts():
            yield from steps.terminated()
        if steps.terminations and not steps.running:
            return
        steps.start_ready()
        yield from active.concurrency_event_iterator(steps.job_context)
        if not steps.running:  # a retry's delay, a pool's slot: wait, still hearing a termination
            time.sleep(max(0.0, min(active.sleep_interval(), POLL_SECONDS)))
            continue
        received = steps.receive()
        if received is not None:
            yield from steps.handle(*received)


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
            sort_key_fn=longest_path_first(execution_plan, job_context),
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
        try:
            log_context = capture_stack.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:  # as in process: the run goes on without its captured output
            yield from _handle_compute_log_setup_error(job_context, sys.exc_info())
        steps = _Steps(job_context, active)
        try:
            yield from _execute(steps)
        finally:
            steps.stop()
            if (
                steps.held is not None
            ):  # never started (a termination, an error): its pool slot back
                concurrency.free_step(steps.held.key)
        try:
            capture_stack.close()
        except Exception:
            yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())
        if steps.terminations:
            raise DagsterExecutionInterruptedError()


class ThreadedExecutor(InProcessExecutor):
    """Dagster's in-process execution of the run's plan, with up to ``threads`` steps at once: its
    ``execute`` is the in-process executor's with the steps' iterator replaced (Dagster takes the
    iterator as a module-level function there, not as something a subclass can swap)."""

    def __init__(
        self,
        retries: RetryMode,
        threads: int,
        tag_concurrency_limits: list[dict] | None = None,
        step_dependency_config: StepDependencyConfig | None = None,
    ):
        super().__init__(
            retries=retries,
            step_dependency_config=step_dependency_config or StepDependencyConfig.default(),
        )
        self.threads = threads
        self.tag_concurrency_limits = tag_concurrency_limits

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
                    step_dependency_config=self.step_dependency_config,
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
        "tag_concurrency_limits": get_tag_concurrency_limits_config(),
        "retries": get_retries_config(),
        "step_dependency_config": get_step_dependency_config_field(),
    },
)
def threaded_executor(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
    """The run's steps in its one process, up to ``max_concurrent`` at once on threads."""
    config = init_context.executor_config
    return ThreadedExecutor(
        retries=RetryMode.from_config(config["retries"]),
        threads=max(1, config["max_concurrent"]),
        tag_concurrency_limits=config.get("tag_concurrency_limits"),
        step_dependency_config=StepDependencyConfig.from_config(
            config.get("step_dependency_config")
        ),
    )
