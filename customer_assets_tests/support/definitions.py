"""The definitions of a deployment, built as Dagster loads them, without a service or a credential.

Every resource takes its secrets as ``EnvVar`` (resolved when a run starts), so building the prod
definitions needs only the variables to be named: nothing is connected, nothing is read.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from customer_assets.definitions import build_definitions

# Variables that would point a build at real services or change the defaults; unset for a build.
UNSET = (
    "BIGQUERY_DATASET",
    "BIGQUERY_LOCATION",
    "BIGQUERY_EMULATOR_HOST",
    "CRM_API_URL",
    "CRM_API_KEY",
    "CRM_DEMO_TABLE",
    "ERP_DB_HOST",
    "EVENTS_PATH",
    "KAFKA_BROKERS",
    "REPORTS_DIR",
    "ALERT_WEBHOOK_URL",
    "DAGSTER_WEBSERVER_URL",
    "WAREHOUSE_READ_COPY_PATH",
    "EMBEDDED_PG_DIR",
)


def offline_definitions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, deployment: str, source: bool = True
) -> dg.Definitions:
    """``build_definitions(deployment)`` with a named (never reached) source database, or without
    one (``source=False``: the local embedded demo), its paths under ``tmp_path``."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    if source:
        monkeypatch.setenv("DB_HOST", "source.invalid")
    else:
        monkeypatch.delenv("DB_HOST", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("ETL_LOG_DIR", str(tmp_path / "logs" / "etl"))
    monkeypatch.setenv("PII_HASH_KEY", "test-hash-key")
    monkeypatch.setenv("GCP_PROJECT_ID", "offline-project")
    return build_definitions(deployment)
