"""A run's claim on its week lasts as long as the run, under the multiprocess executor too, where
each step runs in a process of its own that ends with its step: a sweep in the middle of the run
(another run starting, the sensor ``orphaned_intermediates``, an erasure) leaves the running
week's intermediates alone. A real run of a reconstructable job on a persistent instance."""

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets.alerts import Alerts
from customer_assets.cleanup.claims import sweep_orphans
from customer_assets.cleanup.progress import IntermediateGraph
from customer_assets.cleanup.sweep import with_final_sweep
from customer_assets.hooks import cleanup_hooks
from customer_assets.io_managers.parquet import ParquetIOManager
from customer_assets.settings import PipelineSettings

WEEK = "2026-11-16"
WEEKS = dg.WeeklyPartitionsDefinition(start_date="2026-11-02", day_offset=1)
ROOT = "CLAIMS_TEST_ROOT"  # where the job of the reconstructed process keeps its files


@dg.asset(key_prefix=["analytics"], partitions_def=WEEKS, io_manager_key="warehouse")
def loaded_first() -> pd.DataFrame:
    """A step that ends before the week has any intermediate (as ``dim_date`` can): its cleanup
    hook finds nothing of the week on disk, which must not end the run's claim."""
    return pd.DataFrame({"day": ["2026-11-16"]})


@dg.asset(key_prefix=["etl"], partitions_def=WEEKS, deps=[loaded_first])
def first_half() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["C0000001"], "amount": [12.5]})


@dg.asset(
    key_prefix=["etl"], partitions_def=WEEKS, ins={"first_half": dg.AssetIn(key_prefix="etl")}
)
def second_half(
    context: dg.AssetExecutionContext, settings: PipelineSettings, first_half: pd.DataFrame
) -> pd.DataFrame:
    """Sweeps as another run or the sensor would, in the middle of this run: the step that wrote
    ``first_half`` and claimed the week has ended (its process is gone); the run has not."""
    swept = sweep_orphans(settings, context.instance)
    Path(settings.reports_dir).mkdir(parents=True, exist_ok=True)
    (Path(settings.reports_dir) / "swept.json").write_text(json.dumps(swept))
    return first_half


@dg.asset(
    key_prefix=["etl"], partitions_def=WEEKS, ins={"second_half": dg.AssetIn(key_prefix="etl")}
)
def last_step(second_half: pd.DataFrame) -> None:
    assert len(second_half) == 1


def _settings(root: Path) -> PipelineSettings:
    return PipelineSettings(
        data_dir=str(root / "data"),
        reports_dir=str(root / "reports"),
        etl_log_dir=str(root / "logs"),
    )


def claims_job() -> dg.JobDefinition:
    """The job under the multiprocess executor wrapped as the pipeline's (``with_final_sweep``), each
    step carrying the pipeline's cleanup hooks."""
    root = Path(os.environ[ROOT])
    assets = [loaded_first, first_half, second_half, last_step]
    hooks = cleanup_hooks(IntermediateGraph.of(assets))
    settings = _settings(root)
    defs = dg.Definitions(
        assets=[a.with_hooks(hooks) for a in assets],
        jobs=[dg.define_asset_job("claims", selection=dg.AssetSelection.all())],
        resources={
            "settings": settings,
            "io_manager": ParquetIOManager(settings=settings),
            "warehouse": dg.FilesystemIOManager(base_dir=str(root / "warehouse")),
            "alerts": Alerts(),
        },
        executor=with_final_sweep(dg.multiprocess_executor, settings, IntermediateGraph.of(assets)),
    )
    return defs.resolve_job_def("claims")


def test_a_sweep_during_a_multiprocess_run_leaves_the_runs_week_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT, str(tmp_path))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.execute_job(
            dg.reconstructable(claims_job), instance=instance, tags={"dagster/partition": WEEK}
        )
        assert result.success, [
            str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure
        ]
    # The sweep in the middle of the run removed nothing of its week, so every step read its input;
    # the run's own final sweep then removed the week's intermediates, and no claim is left.
    assert json.loads((tmp_path / "reports" / "swept.json").read_text()) == {}
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
