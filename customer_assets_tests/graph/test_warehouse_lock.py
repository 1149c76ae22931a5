"""Issue 21, item 12: an analyst holding the DuckDB file open (even read-only) made a run retry for
7 min 23 s and then fail with a FileNotFoundError that blamed a finished week. Now a run waits at
most WAREHOUSE_LOCK_TIMEOUT and fails naming the holder, and analysts read the copy published after
each week, which never blocks a run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import duckdb

from customer_assets_tests.support.pipeline import run_week, table_rows

WEEK, EARLIER = "2026-11-16", "2026-11-09"
HOLD = (
    "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
    "print(con.execute('SELECT count(*) FROM customer_analytics.weekly_transactions').fetchone()[0], flush=True); "
    "time.sleep(300)"
)


def test_a_reader_of_the_file_fails_the_run_fast_naming_it_and_analysts_read_the_copy(
    pipeline_env, small_source, monkeypatch
):
    tmp = pipeline_env("small_source", events=False)
    assert run_week(EARLIER).success
    summary = json.loads(next((tmp / "logs" / "etl").glob("etl_*.json")).read_text())
    copy = summary["analysts_read_copy"]
    assert copy == str((tmp / "warehouse_read.duckdb").resolve())
    # the copy is published last: it holds every table of the warehouse as the week left it (the
    # marts, the error log and the facts' quarantine included)
    assert table_rows(copy) == table_rows(tmp / "warehouse.duckdb")

    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT", "2")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp / "warehouse.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(holder.stdout.readline()) > 1000  # the analyst's connection is open
        # the copy is readable while someone holds the file
        with duckdb.connect(copy, read_only=True) as con:
            assert (
                con.execute(
                    "SELECT count(*) FROM customer_analytics.weekly_transactions"
                ).fetchone()[0]
                > 1000
            )
        started = time.monotonic()
        result = run_week(WEEK, raise_on_error=False)
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert not result.success and elapsed < 90
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert failures and all(
        f"PID {holder.pid}" in m and "WAREHOUSE_LOCK_TIMEOUT" in m for m in failures
    ), failures
    assert not any("FileNotFoundError" in m for m in failures)

    assert run_week(WEEK).success  # the holder gone, the week loads and the copy has both weeks
    with duckdb.connect(copy, read_only=True) as con:
        weeks = con.execute(
            "SELECT count(DISTINCT week_start) FROM customer_analytics.weekly_transactions"
        ).fetchone()
    assert weeks[0] == 2
