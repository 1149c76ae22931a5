"""The one place that decides the environment: resources per ``DAGSTER_DEPLOYMENT`` under the same keys."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.io_managers.parquet import LocalParquetIOManager
from customer_assets.resources.postgres import PostgresSource
from customer_assets.settings import settings_from_env

DEPLOYMENTS = ("local",)


def _env(name: str):
    """An ``EnvVar`` when the variable is set (resolved by Dagster, never logged), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def source_db_from_env(data_dir: str) -> PostgresSource:
    if not os.environ.get("DB_HOST"):
        return PostgresSource(embedded_dir=os.environ.get("EMBEDDED_PG_DIR") or str(Path(data_dir, "embedded_postgres")))
    return PostgresSource(
        host=dg.EnvVar("DB_HOST"),
        read_host=_env("DB_READ_HOST"),
        port=dg.EnvVar.int("DB_PORT") if os.environ.get("DB_PORT") else 5432,
        dbname=_env("DB_NAME") or "production",
        user=_env("DB_USER"),
        password=_env("DB_PASSWORD"),
    )


def deployment_name() -> str:
    name = os.environ.get("DAGSTER_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"DAGSTER_DEPLOYMENT={name!r} is not one of {DEPLOYMENTS}")
    return name


def resources_for(deployment: str) -> dict[str, object]:
    """Resources of a deployment, keyed the same everywhere."""
    settings = settings_from_env()
    resources: dict[str, object] = {
        "settings": settings,
        "source_db": source_db_from_env(settings.data_dir),
        "io_manager": LocalParquetIOManager(base_dir=settings.data_dir),
    }
    if deployment == "local":
        resources["warehouse_io_manager"] = DuckDBWarehouseIOManager(
            database=os.environ.get("WAREHOUSE_DUCKDB_PATH") or str(Path(settings.data_dir, "warehouse.duckdb")),
            reports_dir=settings.reports_dir)
    return resources
