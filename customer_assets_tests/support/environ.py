"""The environment the tests give the processes they start (the daemon, the webserver, ``dagster``
commands): this process's own, less every variable of the pipeline and of Dagster, so that a
developer's DB_HOST, DAGSTER_HOME, CRM or Kafka never leaks into a test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import pytest

# Variables of the pipeline and of Dagster that the test's own environment must not leak into the
# processes it starts (a developer's DB_HOST, DAGSTER_HOME, CRM, Kafka...).
FOREIGN = (
    "DB_",
    "ERP_DB_",
    "CRM_",
    "KAFKA_",
    "EVENT",
    "DATA_DIR",
    "WAREHOUSE_",
    "ETL_LOG",
    "REPORTS_DIR",
    "EMBEDDED_PG",
    "DAGSTER_",
    "BIGQUERY_",
    "GCP_",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "SOURCE_",
    "PIPELINE_",
    "PREVIOUS_WEEK_",
    "QUALITY_",
    "ALERT_",
    "ECB_",
    "PII_",
    "CUSTOMER_ASSETS_",
    "STORAGE_EMULATOR_HOST",
    "LATE_CHANGE",
)


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any pipeline or Dagster variable, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)} | extra


@contextlib.contextmanager
def environ(variables: Mapping[str, str]) -> Iterator[None]:
    """This process's environment as ``clean_environ(**variables)`` for the block, then restored."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith(FOREIGN)]:
            patch.delenv(name)
        for name, value in variables.items():
            patch.setenv(name, value)
        yield
