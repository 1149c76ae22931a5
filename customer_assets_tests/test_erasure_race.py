"""Issue 22, item 2: an erasure started while the customer's week runs is never undone by that run.

The week runs through the real `dagster` CLI in a subprocess; the erasure job runs in a thread of
the test at several offsets after the week's extract has read the suppression list (its file
appears), so it lands between the extract and the writes of the customer's rows, where a run that
started before it would write them back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from customer_assets_tests.support.sources import query
from customer_assets_tests.test_erasure_key import erase, rows_of

WEEK = "2026-11-16"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# (seconds after the week's extract wrote its file, whether the erasure runs on the week's instance)
RACES = [(0.0, True), (1.0, True), (3.0, True), (6.0, True), (0.5, False), (3.0, False)]


def _busiest(dsn: str) -> str:
    return query(
        dsn,
        """SELECT upper(trim(customer_id::text)) FROM transactions WHERE status = 'completed'
                         AND "timestamp" >= '2026-11-16' AND "timestamp" < '2026-11-23'
                         GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    )[0][0]


@pytest.mark.parametrize("offset, shared", RACES)
def test_an_erasure_racing_the_weeks_run_is_not_undone(
    pipeline_env, small_source, monkeypatch, offset, shared
):
    """On the week's instance (as deployed) the erasure waits for the week's run, which completes;
    on another (an in-process erasure, a second DAGSTER_HOME) it cannot see the run, and each step
    that writes customer rows removes them again after its write: the week may then stop on its
    row-count check, never with the customer back."""
    import dagster as dg

    tmp = pipeline_env("small_source")
    customer = _busiest(small_source)
    home = tmp / "dagster_home"
    home.mkdir()
    # one instance for the week and the erasure, as deployed
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    extracted = tmp / "data" / "etl" / "raw_transactions" / f"{WEEK}.parquet"
    week = subprocess.Popen(
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
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(week.stdout.read()))
    reader.start()
    deadline = time.monotonic() + 600
    while not extracted.exists() and week.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert extracted.exists() or week.poll() is None, "the week ended before its extract was seen"
    time.sleep(offset)
    still_running = week.poll() is None
    with dg.DagsterInstance.get() if shared else dg.DagsterInstance.ephemeral() as instance:
        assert erase(customer, tmp, request="DSR-RACE", instance=instance).success
    week.wait(timeout=900)
    reader.join()
    assert week.returncode == 0 or not shared, output[0][-3000:]
    print(
        f"offset {offset}s, shared instance {shared}: the week was {'still running' if still_running else 'done'} "
        f"when the erasure began; the week {'succeeded' if week.returncode == 0 else 'stopped'}"
    )
    left = rows_of(tmp / "warehouse.duckdb", customer)
    assert left and not any(left.values()), left
