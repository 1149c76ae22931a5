"""The production Dagster instance (customer_assets/deploy/dagster.yaml) on a real PostgreSQL.

The shipped file is copied into a temporary DAGSTER_HOME with one addition: the embedded test server
listens on a Unix socket only, and dagster-postgres builds ``user@hostname:port/db`` URLs, so a
socket directory cannot be the ``hostname``; it goes into ``params: {host: ...}``, which libpq lets
override the hostname (the same way one would reach Cloud SQL's /cloudsql/... socket in production).
Every ``DAGSTER_PG_*`` variable of the shipped file is still resolved; all but the host are what
connects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import InstigatorStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

import customer_assets
from customer_assets.deployments import resources_for
from customer_assets_tests.support.pipeline import ASSETS
from customer_assets_tests.support.sources import create_source, socket_dir
from customer_assets_tests.support.sources import query as pg

DEPLOY_YAML = Path(customer_assets.__file__).parent / "deploy" / "dagster.yaml"
DB = "dagster_instance"
WEEK = "2026-11-16"
SCHEDULE = "weekly_customer_pipeline_schedule"
ASSET_KEYS = [
    dg.AssetKey(["etl", "raw_transactions"]),
    dg.AssetKey(["etl", "customer_event_aggregates"]),
]


@pytest.fixture(scope="module")
def instance_dsn(pg_server) -> str:
    # an empty database; dagster creates its tables on first use
    return create_source(pg_server, DB)


@pytest.fixture
def dagster_home(tmp_path, monkeypatch, pg_server, instance_dsn) -> Path:
    sockets = socket_dir(pg_server)
    port = next(Path(sockets).glob(".s.PGSQL.*")).suffix.lstrip(".")
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    config["storage"]["postgres"]["postgres_db"]["params"] = {"host": sockets}
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # replaced by params.host: the socket directory
    monkeypatch.setenv("DAGSTER_PG_HOST", "localhost")
    monkeypatch.setenv("DAGSTER_PG_PORT", port)
    monkeypatch.setenv("DAGSTER_PG_USER", "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-by-trust-auth")
    monkeypatch.setenv("DAGSTER_PG_DB", DB)
    return home


def test_shipped_file_is_the_production_instance(dagster_home, instance_dsn):
    shipped = yaml.safe_load(DEPLOY_YAML.read_text())
    used = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    assert shipped["storage"]["postgres"]["postgres_db"].pop("params") == {}
    assert used["storage"]["postgres"]["postgres_db"].pop("params")["host"]
    assert used == shipped  # nothing else changed for the test
    assert {
        k: v
        for k, v in shipped["storage"]["postgres"]["postgres_db"].items()
        if isinstance(v, dict)
    } == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.get_run_queue_config().max_concurrent_runs == 4
        assert [
            (limit["key"], limit["limit"])
            for limit in coordinator.get_run_queue_config().tag_concurrency_limits
        ] == [("dagster/partition", 1)]
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.telemetry_enabled is False
    tables = {
        r[0]
        for r in pg(instance_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"runs", "event_logs", "jobs", "instigators", "job_ticks", "alembic_version"} <= tables


def test_a_materialization_is_recorded_in_postgres(
    dagster_home, instance_dsn, pipeline_env, small_source
):
    pipeline_env("small_source")
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            ASSETS,
            selection=ASSET_KEYS,
            partition_key=WEEK,
            resources=resources_for("local"),
            instance=instance,
        )
        assert result.success
        latest = instance.get_latest_materialization_event(ASSET_KEYS[0])
        assert latest is not None and latest.run_id == result.run_id

    runs = pg(
        instance_dsn, "SELECT status, partition FROM runs WHERE run_id = %s", (result.run_id,)
    )
    assert runs == [("SUCCESS", WEEK)]
    events = pg(
        instance_dsn,
        """SELECT dagster_event_type, asset_key, partition FROM event_logs
                                 WHERE run_id = %s ORDER BY id""",
        (result.run_id,),
    )
    kinds = [e[0] for e in events]
    # Stored by the enum's value, which keeps the old names for runs (RUN_START is
    # "PIPELINE_START").
    Event = dg.DagsterEventType
    assert Event.RUN_START.value in kinds and kinds[-1] == Event.RUN_SUCCESS.value
    assert kinds.count(Event.STEP_SUCCESS.value) == 2
    materialized = {(e[1], e[2]) for e in events if e[0] == Event.ASSET_MATERIALIZATION.value}
    assert materialized == {(key.to_string(), WEEK) for key in ASSET_KEYS}


def test_schedule_state_is_stored_in_postgres(dagster_home, instance_dsn, pipeline_env, tmp_path):
    # the code location loads with local resources; nothing connects to a source
    pipeline_env("no_source")
    cli = Path(sys.executable).with_name("dagster")

    def stored() -> list[tuple]:
        # The serialized origin keeps dagster's legacy field name: job_name is the instigator's
        # name.
        return pg(
            instance_dsn,
            """SELECT status, instigator_type, instigator_body::json #>> '{origin,job_name}'
                                   FROM instigators""",
        )

    # The README's command, in a subprocess: it loads the code location and stores the schedule's
    # state.
    done = subprocess.run(
        [str(cli), "schedule", "start", SCHEDULE, "-m", "customer_assets"],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and f"Started schedule {SCHEDULE}" in done.stdout, (
        done.stdout + done.stderr
    )
    assert stored() == [("RUNNING", "SCHEDULE", SCHEDULE)]

    # Read back and updated through the instance, as the daemon does.
    with dg.DagsterInstance.get() as instance:
        states = [s for s in instance.all_instigator_state() if s.name == SCHEDULE]
        assert (
            len(states) == 1
            and states[0].is_running
            and states[0].instigator_data.cron_schedule == "0 2 * * 1"
        )
        instance.update_instigator_state(states[0].with_status(InstigatorStatus.STOPPED))
    assert stored() == [("STOPPED", "SCHEDULE", SCHEDULE)]
