"""Issue 21, item 15: a run killed with ``kill -9`` leaves customer rows in ``data/etl``; the next
run, of any week, and the sensor ``orphaned_intermediates`` remove them. Real CLI runs, a real
SIGKILL, a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from customer_assets.deployments import resources_for
from customer_assets.sensors import orphaned_intermediates

WEEK, EARLIER = "2026-11-16", "2026-11-09"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _files(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]


def _crash_a_run(tmp: Path, env: dict) -> list[Path]:
    """Start the week from the CLI and SIGKILL it once it has written an intermediate; what it
    left."""
    run = subprocess.Popen(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "customer_assets",
            "--select",
            "*",
            "--partition",
            WEEK,
        ],
        cwd=tmp,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not [p for p in _files(tmp) if p.suffix == ".parquet"] and time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before it wrote an intermediate"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    left = _files(tmp)
    assert left, "the crash left nothing to clean up"
    return left


def _orphan_records(tmp: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in (tmp / "logs" / "etl").glob("failed_*.json")]
    return [r for r in records if r.get("recorded_by") == "orphan sweep"]


def test_what_a_killed_run_left_is_removed_by_the_next_run_and_by_the_sensor(
    pipeline_env, small_source
):
    tmp = pipeline_env("small_source", events=False)
    (tmp / "home").mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(tmp / "home")}

    left = _crash_a_run(tmp, env)
    # The next run, of another week and one small asset, starts by removing what no live run claims.
    done = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "customer_assets",
            "--select",
            "customer_analytics/dim_date",
            "--partition",
            EARLIER,
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not _files(tmp)
    [record] = _orphan_records(tmp)
    assert record["week_start"] == WEEK and set(record["removed"]) >= {str(p) for p in left}

    _crash_a_run(tmp, env)
    result = orphaned_intermediates(
        dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            resources={"settings": resources_for("local")["settings"]},
        )
    )
    assert isinstance(result, dg.SkipReason) and WEEK in result.skip_message
    assert not _files(tmp) and len(_orphan_records(tmp)) == 2
