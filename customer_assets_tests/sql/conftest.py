"""The warehouse the SQL runs in: DuckDB, and BigQuery (emulator), each with the schema ready."""

import uuid

import pytest

from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets_tests.support.sources import BIGQUERY_PROJECT

SCHEMA = "customer_analytics"


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request, tmp_path):
    if request.param == "duckdb":
        duck = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
        duck.execute(f"CREATE SCHEMA {SCHEMA}")
        return duck
    endpoint = request.getfixturevalue("bigquery_endpoint")
    dataset = f"sql_{uuid.uuid4().hex[:8]}"
    request.getfixturevalue("bigquery_client").create_dataset(dataset)
    return BigQueryWarehouse(
        project=BIGQUERY_PROJECT, emulator_host=endpoint, dataset_override=dataset, location="US"
    )
