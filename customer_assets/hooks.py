"""Failure cleanup inside the run itself, whether it started from the CLI, the UI or the schedule.

Every asset step carries two hooks. When a step fails, the week's customer-level intermediates are removed
and ``failed_YYYYMMDD_HHMMSS.json`` is written (failed step, error, files removed). Steps of other branches
may still run after a failure and write intermediates of their own, so any step that ends in a run that
already has a failed step removes the week's intermediates again, and adds them to the record: whatever
step ends last leaves the week clean. No daemon is needed; the run-failure sensor stays as a backstop.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType

from customer_assets.assets.summary import remove_intermediates, write_log

RECORD_TAG = "customer_assets/failure_record"


def _error(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:  # the explanation is often the cause, not the wrapper
        seen.add(id(exc))
        text = getattr(exc, "description", None) or str(exc)
        parts.append(f"{type(exc).__name__}: {text}".strip())
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def _add_to_record(path: Path, removed: list[str], remaining: list[str], **extra) -> None:
    """Update the run's failure record with what a later step removed (and, for a failed step, its error)."""
    record = json.loads(path.read_text())
    for key, value in extra.items():
        record.setdefault(key, []).append(value)
    record["removed"] += removed
    record["remaining"] = remaining
    path.write_text(json.dumps(record, indent=2, default=str))


@dg.failure_hook(required_resource_keys={"settings", "alerts"}, name="clean_up_failed_week")
def clean_up_failed_week(context: dg.HookContext) -> None:
    """A step failed: remove the week's intermediates and record the failure in the ETL log dir."""
    settings = context.resources.settings
    run = context.instance.get_run_by_id(context.run_id)
    week = run.tags.get("dagster/partition") if run else None
    removed, remaining = remove_intermediates(settings, week) if week else ([], [])
    existing = run.tags.get(RECORD_TAG) if run else None
    if existing and Path(existing).exists():
        _add_to_record(Path(existing), removed, remaining,
                       other_failed_steps={"step": context.step_key, "error": _error(context.op_exception)})
        return
    record = {"status": "failed", "run_id": context.run_id, "job": run.job_name if run else None,
              "week_start": week, "step": context.step_key, "error": _error(context.op_exception),
              "removed": removed, "remaining": remaining,
              "reports_dir": str(Path(settings.reports_dir, week)) if week else None, "recorded_by": "run"}
    path = write_log(settings, "failed", record)
    context.instance.add_run_tags(context.run_id, {RECORD_TAG: str(path)})
    context.resources.alerts.send("run_failed", f"step {context.step_key} of run {context.run_id[:8]} failed", week,
                                  {"error": (record["error"] or "")[:500], "record": str(path)}, context.log)
    context.log.error(f"step {context.step_key} failed: removed {len(removed)} intermediate file(s) of week "
                      f"{week}; failure recorded in {path}")


@dg.success_hook(required_resource_keys={"settings"}, name="clean_up_after_failure")
def clean_up_after_failure(context: dg.HookContext) -> None:
    """A step succeeded in a run where another step failed: what it wrote must not stay either."""
    if not context.instance.all_logs(context.run_id, of_type=DagsterEventType.STEP_FAILURE):
        return
    run = context.instance.get_run_by_id(context.run_id)
    week = run.tags.get("dagster/partition") if run else None
    if not week:
        return
    removed, remaining = remove_intermediates(context.resources.settings, week)
    if not removed:
        return
    record = run.tags.get(RECORD_TAG)
    if record and Path(record).exists():
        _add_to_record(Path(record), removed, remaining)
    context.log.info(f"run has a failed step: removed {len(removed)} intermediate file(s) of week {week}")


CLEANUP_HOOKS = {clean_up_failed_week, clean_up_after_failure}
