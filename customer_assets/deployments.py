"""The one place that decides the environment: resources per ``DAGSTER_DEPLOYMENT`` under the same
keys."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from customer_assets.alerts import Alerts
from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.io_managers.parquet import ParquetIOManager
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.pii import (
    KEY_FILE_NAME,
    LocalPiiKey,
    PiiKey,
    local_hash_key,
    local_key_path,
)
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.rates import EcbRates
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets.settings import (
    kafka_configured,
    kafka_settings_from_env,
    settings_from_env,
    source_configured,
)
from customer_assets.sources.ecb_rates import ECB_RATES_URL
from customer_assets.sources.kafka import KafkaSource
from customer_assets.sources.source_schema import check_timezone

DEPLOYMENTS = ("local", "prod")
# Where a warehouse table lives, as the UI's kind icon: DuckDB locally, BigQuery in production.
WAREHOUSE_KINDS = {"local": "duckdb", "prod": "bigquery"}


def _env_var(name: str):
    """An ``EnvVar`` when the variable is set (resolved by Dagster, never logged), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def uses_embedded_demo(deployment: str) -> bool:
    """No DB_HOST: the embedded demo server (local only), with its demo CRM table and event
    files."""
    if source_configured():
        return False
    if deployment != "local":
        raise ValueError(
            f"DAGSTER_DEPLOYMENT={deployment} needs DB_HOST: the embedded demo database is local only"
        )
    return True


def source_db_from_env(deployment: str, data_dir: str, events_path: str | None) -> PostgresSource:
    from customer_assets.settings import source_timeouts_from_env

    timezone = check_timezone(os.environ.get("SOURCE_TIMEZONE") or "UTC")
    timeouts = source_timeouts_from_env()
    if uses_embedded_demo(deployment):
        # the demo, only when it is used
        from customer_assets.demo.embedded import EmbeddedPostgresSource

        return EmbeddedPostgresSource(
            embedded_dir=os.environ.get("EMBEDDED_PG_DIR")
            or str(Path(data_dir, "embedded_postgres")),
            # The demo writes its own event files only where nothing else feeds the landing zone.
            demo_events_dir=None
            if os.environ.get("EVENTS_PATH") or kafka_configured()
            else events_path,
            timezone=timezone,
            **timeouts,
        )
    return PostgresSource(
        timezone=timezone,
        **timeouts,
        host=dg.EnvVar("DB_HOST"),
        read_host=_env_var("DB_READ_HOST"),
        port=dg.EnvVar.int("DB_PORT") if os.environ.get("DB_PORT") else 5432,
        dbname=_env_var("DB_NAME") or "production",
        user=_env_var("DB_USER"),
        password=_env_var("DB_PASSWORD"),
    )


def warehouse_path(data_dir: str) -> str:
    """The local DuckDB warehouse: WAREHOUSE_DUCKDB_PATH, by default
    ``$DATA_DIR/warehouse.duckdb``."""
    return os.environ.get("WAREHOUSE_DUCKDB_PATH") or str(Path(data_dir, "warehouse.duckdb"))


def pii_from_env(deployment: str, data_dir: str) -> PiiKey:
    """PII_HASH_KEY; locally, when it is unset, a random key kept beside the warehouse (stable
    across weeks; a key of older code in ``$DATA_DIR`` is carried over)."""
    if os.environ.get("PII_HASH_KEY") or deployment != "local":
        return PiiKey(hash_key=dg.EnvVar("PII_HASH_KEY"))
    path = local_key_path(warehouse_path(data_dir))
    return LocalPiiKey(
        hash_key=local_hash_key(path, legacy=Path(data_dir, KEY_FILE_NAME)), key_file=str(path)
    )


def crm_from_env(deployment: str) -> CrmSource:
    """CRM_API_URL: the CRM's API; unset: none, except on the embedded demo (its ``crm_customers``
    table) or where CRM_DEMO_TABLE names a table of seeded demo data (benchmarks)."""
    demo_table = (
        "crm_customers"
        if uses_embedded_demo(deployment)
        else os.environ.get("CRM_DEMO_TABLE") or None
    )
    if demo_table and not os.environ.get("CRM_API_URL"):
        from customer_assets.demo.sources import DemoCrmSource

        return DemoCrmSource(demo_table=demo_table)
    return CrmSource(api_url=_env_var("CRM_API_URL"), api_key=_env_var("CRM_API_KEY"))


def erp_from_env(deployment: str) -> ErpSource:
    """ERP_DB_HOST: the ERP's own PostgreSQL; unset: none, except on the embedded demo (its ``erp``
    schema)."""
    if not os.environ.get("ERP_DB_HOST"):
        if uses_embedded_demo(deployment):
            from customer_assets.demo.sources import DemoErpSource

            return DemoErpSource()
        return ErpSource()
    optional = {
        key: value
        for key, value in {
            "dbname": _env_var("ERP_DB_NAME"),
            "user": _env_var("ERP_DB_USER"),
            "password": _env_var("ERP_DB_PASSWORD"),
            "schema_name": os.environ.get("ERP_DB_SCHEMA") or None,
            "table": os.environ.get("ERP_DB_TABLE") or None,
            "columns": os.environ.get("ERP_DB_COLUMNS") or None,
        }.items()
        if value is not None
    }
    return ErpSource(
        host=dg.EnvVar("ERP_DB_HOST"),
        port=dg.EnvVar.int("ERP_DB_PORT") if os.environ.get("ERP_DB_PORT") else 5432,
        **optional,
    )


def lock_timeout_from_env() -> float:
    """WAREHOUSE_LOCK_TIMEOUT: seconds a step waits for another process's lock on the DuckDB
    file."""
    value = os.environ.get("WAREHOUSE_LOCK_TIMEOUT") or "60"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86_400:
        raise ValueError(
            f"WAREHOUSE_LOCK_TIMEOUT={value!r} must be a number of seconds between 0 and 86400, e.g. 60"
        )
    return seconds


def deployment_name() -> str:
    name = os.environ.get("DAGSTER_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"DAGSTER_DEPLOYMENT={name!r} is not one of {DEPLOYMENTS}")
    return name


def resources_for(deployment: str) -> dict[str, object]:
    """Resources of a deployment, keyed the same everywhere."""
    settings = settings_from_env(demo=uses_embedded_demo(deployment))
    resources: dict[str, object] = {
        "settings": settings,
        "source_db": source_db_from_env(deployment, settings.data_dir, settings.events_path),
        "pii": pii_from_env(deployment, settings.data_dir),
        "crm": crm_from_env(deployment),
        "erp": erp_from_env(deployment),
        "kafka": KafkaSource(**kafka_settings_from_env()),
        "rates": EcbRates(
            data_dir=settings.data_dir,
            url=os.environ.get("ECB_RATES_URL") or ECB_RATES_URL,
            pinned_file=os.environ.get("ECB_RATES_FILE") or None,
        ),
        # Intermediates in DATA_DIR, or in a bucket when runs do not share a disk.
        "io_manager": ParquetIOManager(settings=settings),
        "alerts": Alerts(
            webhook_url=_env_var("ALERT_WEBHOOK_URL"),
            webserver_url=os.environ.get("DAGSTER_WEBSERVER_URL") or None,
        ),
    }
    # The warehouse configured once: its IO manager loads into the very warehouse it is given.
    if deployment == "local":
        database = warehouse_path(settings.data_dir)
        read_copy = (os.environ.get("WAREHOUSE_READ_COPY_PATH") or "").strip()
        off = read_copy.lower() == "off"
        warehouse = DuckDBWarehouse(
            database=database,
            lock_timeout_seconds=lock_timeout_from_env(),
            read_copy_path=read_copy
            if read_copy and not off
            else str(Path(database).with_name(f"{Path(database).stem}_read.duckdb")),
            read_copy_off=off,
        )
        resources["warehouse_io_manager"] = DuckDBWarehouseIOManager(
            warehouse=warehouse, reports_dir=settings.reports_dir
        )
        resources["warehouse"] = warehouse
    elif deployment == "prod":
        # here, not at the top: only production loads dagster-gcp and the BigQuery client
        from customer_assets.io_managers.bigquery_warehouse import BigQueryWarehouseIOManager
        from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse

        optional = {
            key: value
            for key, value in {
                "location": _env_var("BIGQUERY_LOCATION"),
                "dataset_override": _env_var("BIGQUERY_DATASET"),
                "emulator_host": _env_var("BIGQUERY_EMULATOR_HOST"),
            }.items()
            if value is not None
        }
        bigquery = BigQueryWarehouse(project=dg.EnvVar("GCP_PROJECT_ID"), **optional)
        resources["warehouse_io_manager"] = BigQueryWarehouseIOManager(
            warehouse=bigquery, reports_dir=settings.reports_dir
        )
        resources["warehouse"] = bigquery
    return resources
