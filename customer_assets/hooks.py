"""The hooks every asset step carries: the intermediates no remaining step needs go when a step
ends, and a failed step is recorded and alerted. The mechanism is explained in ``cleanup/__init__.py``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.decorators.hook_decorator import event_list_hook
from dagster._core.definitions.events import HookExecutionResult

from customer_assets.cleanup.intermediates import intermediate_files
from customer_assets.cleanup.progress import IntermediateGraph
from customer_assets.cleanup.records import (
    RECORD_TAG,
    add_to_record,
    failure_record,
    write_failure_record,
)
from customer_assets.cleanup.runs import run_weeks
from customer_assets.cleanup.sweep import sweep


def step_end_hook(name: str, required_resource_keys: set[str]):
    """A hook that runs once its step has ended, succeeded or failed, and is told which
    (``fn(context, succeeded)``): one hook where a success hook and a failure hook would be two,
    one of them skipped, and logged as skipped, at every step's end."""

    def wrapper(fn) -> dg.HookDefinition:
        @event_list_hook(name=name, required_resource_keys=required_resource_keys)
        def _hook(context: dg.HookContext, event_list) -> HookExecutionResult:
            for event in event_list:
                if event.is_step_success or event.is_step_failure:
                    fn(context, event.is_step_success)
                    return HookExecutionResult(hook_name=name, is_skipped=False)
            return HookExecutionResult(hook_name=name, is_skipped=True)  # a retry: not ended

        return _hook

    return wrapper


def error_text(exc: BaseException | None) -> str | None:
    """The exception and its causes on one line: the explanation is often the cause, not the
    wrapper."""
    if exc is None:
        return None
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = getattr(exc, "description", None) or str(exc)
        parts.append(f"{type(exc).__name__}: {text}".strip())
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def _record_failure(context: dg.HookContext, run: dg.DagsterRun) -> None:
    """``failed_*.json`` for the run's first failed step (later ones are added to it), and the
    alert."""
    settings, error = context.resources.settings, error_text(context.op_exception)
    if (
        add_to_record(run, [], [], other_failed_steps={"step": context.step_key, "error": error})
        is not None
    ):
        return
    weeks = run_weeks(run)
    week = weeks[0] if weeks else None
    remaining = [str(p) for w in weeks for p in intermediate_files(settings, w)]
    path = write_failure_record(
        settings,
        failure_record(
            settings, week, "run", run=run, step=context.step_key, error=error, remaining=remaining
        ),
    )
    context.instance.add_run_tags(context.run_id, {RECORD_TAG: str(path)})
    context.resources.alerts.send(
        "run_failed",
        f"step {context.step_key} of run {context.run_id[:8]} failed",
        week,
        {"error": (error or "")[:500], "record": str(path)},
        context.log,
    )
    context.log.error(f"step {context.step_key} failed; failure recorded in {path}")


def cleanup_hooks(graph: IntermediateGraph) -> set[dg.HookDefinition]:
    """The hook of every step, knowing which step reads which intermediate (``graph``)."""

    def _sweep(context: dg.HookContext, succeeded: bool) -> None:
        run = context.instance.get_run_by_id(context.run_id)
        if run is None:
            return
        removed = sweep(
            context.instance,
            run,
            context.resources.settings,
            graph,
            current=context.step_key,
            current_succeeded=succeeded,
        )
        if removed:
            names = sorted({Path(p).parent.name for p in removed})
            context.log.info(
                f"removed {len(removed)} intermediate file(s) no remaining step of the run can read: "
                f"{', '.join(names)}"
            )

    @step_end_hook("record_and_release", {"settings", "alerts"})
    def record_and_release(context: dg.HookContext, succeeded: bool) -> None:
        """A step ended: if it failed, record and alert; then remove the intermediates no remaining
        step of the run can read."""
        if not succeeded and (run := context.instance.get_run_by_id(context.run_id)) is not None:
            _record_failure(context, run)
        _sweep(context, succeeded=succeeded)

    return {record_and_release}
