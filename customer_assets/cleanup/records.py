"""The logs a run leaves: every file of the ETL log directory is written by ``write_log``, and a
failure is recorded in one shape (``failure_record``) whoever records it (see the package
docstring)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from customer_assets.settings import PipelineSettings

RECORD_TAG = "customer_assets/failure_record"


def write_log(settings: PipelineSettings, prefix: str, payload: dict) -> Path:
    """``<etl_log_dir>/<prefix>_YYYYMMDD_HHMMSS.json`` (microseconds added if that name is
    taken)."""
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


def add_to_record(
    run: dg.DagsterRun | None,
    removed: list[str],
    remaining: list[str],
    **extra,
) -> Path | None:
    """Add what was removed (and, for a failed step, its error) to the run's failure record, if it
    has one (its tag on ``run``, as just read)."""
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
