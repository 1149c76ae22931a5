"""Issue 27, item 4: one shape of ``failed_*.json``, whoever records the failure. The run-failure
sensor, the backstop for a run no hook recorded, writes the fields the failed step's hook writes
(``failure_record``) and removes the week's intermediates. A real failed run in a real instance."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from customer_assets.alerts import Alerts
from customer_assets.cleanup.records import RECORD_TAG, failure_record
from customer_assets.cleanup.runs import run_week
from customer_assets.sensors import etl_failure_cleanup
from customer_assets.settings import PipelineSettings

WEEK = "2026-11-16"


@dg.op
def broken_step():
    raise RuntimeError("injected: the step fails")


@dg.job
def failing_week():
    broken_step()


def _failed_run(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    """A run of the week whose step failed, and no hook recorded it (as if its worker died)."""
    result = failing_week.execute_in_process(
        instance=instance, tags={"dagster/partition": WEEK}, raise_on_error=False
    )
    events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return instance.get_run_by_id(result.run_id), events[0].dagster_event


def test_the_sensor_records_a_failure_in_the_shape_the_hook_does(tmp_path: Path):
    settings = PipelineSettings(
        data_dir=str(tmp_path / "data"),
        reports_dir=str(tmp_path / "reports"),
        etl_log_dir=str(tmp_path / "logs"),
    )
    left = tmp_path / "data" / "etl" / "raw_transactions" / f"{WEEK}.parquet"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"customer rows")
    with dg.instance_for_test() as instance:
        run, failure = _failed_run(instance)
        assert RECORD_TAG not in run.tags and run_week(run) == WEEK
        etl_failure_cleanup(
            dg.build_run_status_sensor_context(
                sensor_name="etl_failure_cleanup",
                dagster_instance=instance,
                dagster_run=run,
                dagster_event=failure,
                resources={"settings": settings, "alerts": Alerts()},
            ).for_run_failure()
        )

    [path] = (tmp_path / "logs").glob("failed_*.json")
    record = json.loads(path.read_text())
    assert set(record) == set(failure_record(settings, WEEK, "run"))
    assert record["recorded_by"] == "run failure sensor" and record["week_start"] == WEEK
    assert record["run_id"] == run.run_id and record["step"] == "broken_step"
    assert "broken_step" in record["error"]
    assert [Path(p).name for p in record["removed"]] == [left.name] and record["remaining"] == []
    assert not left.exists()
