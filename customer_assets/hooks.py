"""The hooks every asset step carries: the intermediates no remaining step needs go when a step
ends, and a failed step is recorded and alerted. The mechanism is explained in ``cleanup/__init__.py``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

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
        add_to_record(
            context.instance,
            context.run_id,
            [],
            [],
            other_failed_steps={"step": context.step_key, "error": error},
        )
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
    """The two hooks of every step, knowing which step reads which intermediate (``graph``)."""

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

    @dg.failure_hook(required_resource_keys={"settings", "alerts"}, name="record_failed_step")
    def record_failed_step(context: dg.HookContext) -> None:
        """A step failed: record and alert, then remove what no remaining step can read."""
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None:
            _record_failure(context, run)
        _sweep(context, succeeded=False)

    @dg.success_hook(required_resource_keys={"settings"}, name="release_intermediates")
    def release_intermediates(context: dg.HookContext) -> None:
        """A step succeeded: remove the intermediates no remaining step of the run can read."""
        _sweep(context, succeeded=True)

    return {record_failed_step, release_intermediates}
