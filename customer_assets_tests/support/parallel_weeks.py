"""Weeks run at once (issue 26 item 5): the production instance with its daemon and webserver in
process groups of their own, the pipeline's environment for them, the runs of a backfill and the
warehouse tables read back for a row-for-row comparison.

Every process of a run (the daemon, the run worker it launches, the multiprocess executor's steps)
gets the same environment (``pipeline_environ``): the seeded source, the prod deployment pointed at
the BigQuery emulator and one BigQuery dataset (``BIGQUERY_DATASET``), and a DATA_DIR/ETL_LOG_DIR of
the variant's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg2
import pytest
import yaml
from psycopg2 import sql

import customer_assets
from customer_assets import tables
from customer_assets.demo.seed import SeedConfig
from customer_assets.schedules import weekly_pipeline_job
from customer_assets_tests.support.comparing import values_only
from customer_assets_tests.support.sources import BIGQUERY_PROJECT, create_source, socket_dir

# Four complete weeks (2026-10-26 .. 2026-11-16), small enough for a week to run in about a minute
# on the emulator; the seed's purchase propensities are Zipf-like, so many of the 300 customers buy
# in several of the weeks (the test checks it): their carried history and identity matter.
SEED = SeedConfig(customers=300, products=40, weeks=4, transactions_per_week=400, bots_per_week=1)
WEEKS = [day.isoformat() for day in SEED.week_starts]
JOB = weekly_pipeline_job.name
DEPLOY_YAML = Path(customer_assets.__file__).parent / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def pipeline_environ(
    pg_server,
    source: str,
    events_dir: Path,
    workdir: Path,
    bigquery_endpoint: str,
    dataset: str,
    first_week: str,
) -> dict[str, str]:
    """The pipeline's variables for one variant: the prod deployment on the seeded ``source`` (its
    events and its ERP schema read as a separate ERP database; no CRM: its API would be a server
    inside the test process), the emulator and ``dataset``, and paths under ``workdir``.

    ``first_week`` is the partitions' first week as the test process defined them at import
    (PIPELINE_FIRST_WEEK), so that every process agrees on what "the first week" is."""
    import currency_converter

    sockets = socket_dir(pg_server)
    return {
        "DAGSTER_DEPLOYMENT": "prod",
        "DB_HOST": sockets,
        "DB_USER": "postgres",
        "DB_NAME": source,
        "ERP_DB_HOST": sockets,
        "ERP_DB_USER": "postgres",
        "ERP_DB_NAME": source,
        "EVENTS_PATH": str(events_dir),
        "DATA_DIR": str(workdir / "data"),
        "WAREHOUSE_DUCKDB_PATH": str(workdir / "warehouse.duckdb"),
        "ETL_LOG_DIR": str(workdir / "logs" / "etl"),
        "PII_HASH_KEY": "test-hash-key",
        # the shipped ECB file, never the live one: figures must not change with the day
        "ECB_RATES_FILE": currency_converter.CURRENCY_FILE,
        "PIPELINE_FIRST_WEEK": first_week,
        "GCP_PROJECT_ID": BIGQUERY_PROJECT,
        "BIGQUERY_EMULATOR_HOST": str(bigquery_endpoint),
        "BIGQUERY_DATASET": dataset,
    }


def instance_home(pg_server, home: Path, database: str) -> dict[str, str]:
    """``home`` as a DAGSTER_HOME holding the shipped deploy/dagster.yaml on an empty database of
    the test's PostgreSQL (as test_instance.py: the socket directory in ``params.host``, the one
    change); the variables the instance reads (DAGSTER_HOME, DAGSTER_PG_*)."""
    create_source(pg_server, database)
    sockets = socket_dir(pg_server)
    port = next(Path(sockets).glob(".s.PGSQL.*")).suffix.lstrip(".")
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    config["storage"]["postgres"]["postgres_db"]["params"] = {"host": sockets}
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "localhost",  # replaced by params.host: the socket directory
        "DAGSTER_PG_PORT": port,
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-by-trust-auth",
        "DAGSTER_PG_DB": database,
    }


def drop_database(pg_server, database: str) -> None:
    admin = psycopg2.connect(pg_server.get_uri("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
    admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def process_group(command: list[str], env: dict, cwd: Path, log: Path) -> Iterator:
    """``command`` in a session and process group of its own (setsid: the daemon's run workers and
    their step processes are in it too); the whole group is stopped when the block ends, however it
    ends: SIGTERM, then SIGKILL after 30 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            # the leader is gone (or would not go): no straggler of its group stays behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextlib.contextmanager
def daemon(env: dict, workdir: Path, instance: dg.DagsterInstance, timeout: float = 240):
    """A real ``dagster-daemon run -m customer_assets``, yielded once the run queue, the backfill
    and the sensor daemons have sent a heartbeat to the instance."""
    log = workdir / "daemon.log"
    command = [str(BIN / "dagster-daemon"), "run", "-m", "customer_assets"]
    with process_group(command, env, workdir, log) as proc:
        needed = {"QUEUED_RUN_COORDINATOR", "BACKFILL", "SENSOR"}
        deadline = time.monotonic() + timeout
        while not needed <= set(instance.get_daemon_heartbeats()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-daemon not up (exit {proc.poll()}):\n{log_tail(log)}")
            time.sleep(2)
        yield log


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def webserver(env: dict, workdir: Path, timeout: float = 240):
    """A real ``dagster-webserver -m customer_assets`` on the same instance; yields its port once
    its GraphQL lists the code location's assets."""
    port = free_port()
    log = workdir / "webserver.log"
    command = [str(BIN / "dagster-webserver"), "-m", "customer_assets"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    with process_group(command, env, workdir, log) as proc:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if graphql(port, "{ assetNodes { id } }").get("data", {}).get("assetNodes"):
                    break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver not up (exit {proc.poll()}):\n{log_tail(log)}")
            time.sleep(2)
        yield port


def job_backfill(env: dict, workdir: Path) -> str:
    """``dagster job backfill`` of the weekly job over WEEKS: one queued run per week, at once; the
    backfill's id."""
    done = subprocess.run(
        [str(BIN / "dagster"), "job", "backfill", "-j", JOB, "-m", "customer_assets"]
        + ["--partitions", ",".join(WEEKS), "--noprompt"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    launched = re.search(r"Launched backfill job `([^`]+)`", done.stdout)
    assert done.returncode == 0 and launched, done.stdout[-3000:] + done.stderr[-3000:]
    return launched.group(1)


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""


def asset_backfill(port: int, asset_keys: list[dg.AssetKey]) -> str:
    """What the UI's "Materialize" over a range of weeks sends: ``launchPartitionBackfill`` with the
    assets and the weeks; the backfill's id."""
    params = {
        "assetSelection": [{"path": list(key.path)} for key in asset_keys],
        "partitionNames": WEEKS,
        "fromFailure": False,
    }
    answer = graphql(port, LAUNCH_BACKFILL, {"params": params})
    launched = (answer.get("data") or {}).get("launchPartitionBackfill") or {}
    assert launched.get("__typename") == "LaunchBackfillSuccess", json.dumps(answer)[:4000]
    return launched["backfillId"]


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id})))


def wait_for_backfill(
    instance: dg.DagsterInstance, backfill_id: str, timeout: float, log: Path
) -> list[dg.DagsterRun]:
    """Waits until the backfill has launched what it will and no run of the instance is queued or
    running any more (a sensor's run would write the same dataset); the backfill's runs."""
    from dagster._core.execution.backfill import BulkActionStatus

    pending = {BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING}
    deadline = time.monotonic() + timeout
    while True:
        backfill = instance.get_backfill(backfill_id)
        unfinished = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
        if backfill is not None and backfill.status not in pending and not unfinished:
            return backfill_runs(instance, backfill_id)
        if time.monotonic() > deadline:
            status = backfill.status if backfill else None
            pytest.fail(
                f"backfill {backfill_id} not done after {timeout:.0f} s (status {status}):\n"
                + describe_runs(instance, list(instance.get_runs()))
                + f"\nwarnings in the daemon's log:\n{daemon_warnings(log)}"
            )
        time.sleep(5)


def describe_runs(
    instance: dg.DagsterInstance,
    runs: list[dg.DagsterRun],
    every_asset: frozenset[dg.AssetKey] = frozenset(),
) -> str:
    """One line per run (week, status, what it selected: "every asset" when it selects all of
    ``every_asset``), and under a failed run its steps' failures and the run's failure, from the
    instance's event log."""
    lines = []
    for run in sorted(runs, key=lambda r: (r.tags.get(PARTITION_TAG, ""), r.run_id)):
        selection = run.asset_selection
        selected = (
            "every asset"
            if selection is None or (every_asset and selection >= every_asset)
            else ", ".join(sorted(k.to_user_string() for k in selection))
        )
        lines.append(
            f"{run.tags.get(PARTITION_TAG)} {run.status.value} {run.run_id} [{selected[:500]}]"
        )
        if run.status == dg.DagsterRunStatus.SUCCESS:
            continue
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            error = event.dagster_event.step_failure_data.error
            cause = error.cause.message.strip() if error and error.cause else ""
            message = (error.message.strip() if error else event.message) + (
                f" (caused by: {cause})" if cause else ""
            )
            lines.append(f"    step {event.step_key}: {message[:1500]}")
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
            lines.append(f"    run failure: {(event.message or '')[:1500]}")
    return "\n".join(lines)


def daemon_warnings(log: Path, limit: int = 40) -> str:
    """The pipeline's warnings and errors in the daemon's log (its run workers and sensors log
    there), e.g. a sensor that removed a week's intermediates."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r" - (WARNING|ERROR) - ", line) and "No cursor for event type" not in line
    ]
    return "\n".join(line[:500] for line in lines[-limit:])


def max_overlap(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> int:
    """The most runs of ``runs`` that were running at the same moment (from their start and end
    times in the instance)."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id for run in runs]))
    spans = [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
    return max((sum(s <= start < e for s, e in spans) for start, _ in spans), default=0)


def left_to_repair(instance: dg.DagsterInstance) -> dict[str, str]:
    """The weeks the sensor ``source_changes`` would re-run after the weeks ran, and why: its own
    rule (``weeks_to_repair``), with each week's source version taken as the one its extract read,
    so that only how the weeks were carried counts (a history not built from the previous week's
    latest history, an identity carried from an older week)."""
    from customer_assets.assets.common import metadata_value
    from customer_assets.late_changes import RAW, weeks_to_repair
    from customer_assets.partitions import latest_materialization

    read = {
        week: metadata_value(latest_materialization(instance, RAW, week), "source_version")
        for week in WEEKS
    }
    _, reasons = weeks_to_repair(instance, WEEKS, read)
    return reasons


# --------------------------------------------------------------------------------------------------
# The warehouse, read back


def warehouse_tables(asset_keys: list[dg.AssetKey]) -> list[str]:
    return sorted(key.path[1] for key in asset_keys if tables.is_table(key))


def read_table(bigquery_client, dataset: str, table: str) -> pd.DataFrame:
    frame = (
        bigquery_client.query(f"SELECT * FROM `{BIGQUERY_PROJECT}.{dataset}.{table}`")
        .result()
        .to_arrow(create_bqstorage_client=False)
        .to_pandas()
    )
    return frame


def read_warehouse(bigquery_client, dataset: str, names: list[str]) -> dict[str, pd.DataFrame]:
    """Every table of ``names`` in ``dataset``; a missing one is missing from the dict."""
    present = {t.table_id for t in bigquery_client.list_tables(f"{BIGQUERY_PROJECT}.{dataset}")}
    return {name: read_table(bigquery_client, dataset, name) for name in names if name in present}


def _plain(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def comparable(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows as values, in a defined order: ``drop`` columns removed, timestamps in UTC at
    microseconds (BigQuery's resolution), categories as objects, arrays and records as JSON text,
    then sorted by every column."""
    frame = values_only(frame, tuple(c for c in drop if c in frame.columns))
    for name in [n for n, values in frame.items() if values.dtype == object]:
        frame[name] = frame[name].map(_plain)
    order = list(frame.columns)
    try:
        frame = frame.sort_values(order, na_position="last", kind="mergesort")
    except TypeError:  # values of mixed types in a column: order by their text
        frame = frame.loc[frame.astype(str).sort_values(order, kind="mergesort").index]
    return frame.reset_index(drop=True)


def differences(
    expected: dict[str, pd.DataFrame],
    actual: dict[str, pd.DataFrame],
    drop: Mapping[str, tuple[str, ...]],
) -> list[str]:
    """Per table, pandas' description of how ``actual`` differs from ``expected`` (same columns,
    same rows after sorting; floats within 1e-9 relative, as sums may differ in their last bits with
    the order of summation); empty when every table is equal."""
    found = []
    for name in sorted(expected):
        if name not in actual:
            found.append(f"{name}: missing")
            continue
        left = comparable(expected[name], drop.get(name, ()))
        right = comparable(actual[name], drop.get(name, ()))
        try:
            pd.testing.assert_frame_equal(
                right,
                left,
                check_dtype=False,
                check_exact=False,
                rtol=1e-9,
                atol=1e-9,
                obj=f"customer_analytics.{name} ({len(right)} rows, one by one {len(left)})",
            )
        except AssertionError as error:
            found.append(f"{name}: {str(error)[:3000]}")
    return found
