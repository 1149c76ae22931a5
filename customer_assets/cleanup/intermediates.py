"""Where a week's intermediates are, on the local disk and in the bucket alike, and their removal:
every sweep, the run summary and the erasure find them through ``intermediate_files``, so a bucket
root is covered wherever they are removed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType

from customer_assets.io_managers.intermediate_root import IntermediateFile, intermediate_roots
from customer_assets.settings import PipelineSettings

ETL = "etl"


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


# Report files that list customers, written for the operator during the run (seed 000's
# anomalies.csv): they go with the last intermediate of the week. The rows stay queryable in the
# warehouse (flagged_transactions).
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
    """Delete the week's intermediate files (of ``keys``, or all of them and the customer-level
    reports); return (removed, still present)."""
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
    """The intermediates a run wrote (materializations stored by the Parquet manager, which says
    so)."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=100_000
    ).records
    materializations = [r.event_log_entry.asset_materialization for r in records]
    return sorted(
        {m.asset_key for m in materializations if m and "intermediate" in m.metadata},
        key=lambda k: k.to_user_string(),
    )
