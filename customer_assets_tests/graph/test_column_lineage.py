"""Issue 24 item 4: the facts and the marts carry their column lineage and column schemas, as
Dagster's GraphQL API (what the UI reads) serves them after a real week into a persistent instance
(DuckDB warehouse)."""

from __future__ import annotations

import os

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from customer_assets.lineage import LINEAGE, MODELS
from customer_assets.schemas import (
    CustomerHistory,
    CustomerIdentityMap,
    DimDate,
    FactTransactions,
    FactTransactionsQuarantine,
    TransformedTransactions,
)
from customer_assets.sql.scd2 import CUSTOMERS, PRODUCTS
from customer_assets_tests.support.pipeline import run_week
from customer_assets_tests.support.sources import EVENTS, socket_dir

WEEK = "2026-11-16"
MARTS = ["mart_weekly_sales", "mart_churn_retention", "mart_cohort_retention"]
# The columns of each table a lineage may name.
UPSTREAM_COLUMNS = {
    "weekly_transactions": list(TransformedTransactions.to_schema().columns),
    "dim_customers": [*CUSTOMERS.columns, CUSTOMERS.surrogate],
    "dim_products": [*PRODUCTS.columns, PRODUCTS.surrogate],
    "dim_date": list(DimDate.to_schema().columns),
    "customer_identity_map": list(CustomerIdentityMap.to_schema().columns),
    "customer_history": list(CustomerHistory.to_schema().columns),
    "fact_transactions": list(FactTransactions.to_schema().columns),
}

ASSET_QUERY = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      dependencyKeys { path }
      metadataEntries { label ... on TableSchemaMetadataEntry { schema { columns { name description } } } }
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          label
          ... on TableColumnLineageMetadataEntry {
            lineage { columnName columnDeps { assetKey { path } columnName } }
          }
        }
      }
    }
  }
}
"""


def test_every_column_of_the_facts_and_marts_has_lineage_from_existing_columns():
    for name, model in MODELS.items():
        columns = set(model.to_schema().columns)
        assert not columns - set(LINEAGE[name]), (
            f"{name}: columns without lineage in customer_assets/lineage.py"
        )
        assert not set(LINEAGE[name]) - columns, (
            f"{name}: lineage of columns the model does not have"
        )
        for column, lineage in LINEAGE[name].items():
            assert lineage.sources and len(set(lineage.sources)) == len(lineage.sources), (
                name,
                column,
            )
            # a copy has one source
            assert lineage.rule or len(lineage.sources) == 1, (name, column)
            for source in lineage.sources:
                table, upstream_column = source.split(".")
                assert upstream_column in UPSTREAM_COLUMNS[table], (name, column, source)


@pytest.fixture(scope="module")
def graphql(pg_server, small_source, tmp_path_factory):
    """One week of the graph into a persistent instance; yields a function that runs a GraphQL
    query against it as the webserver does (the project's definitions as its code location)."""
    import currency_converter

    tmp = tmp_path_factory.mktemp("lineage")

    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "DB_HOST": socket_dir(pg_server),
            "DB_USER": "postgres",
            "DB_NAME": "small_source",
            "DATA_DIR": str(tmp / "data"),
            "WAREHOUSE_DUCKDB_PATH": str(tmp / "warehouse.duckdb"),
            "ETL_LOG_DIR": str(tmp / "logs" / "etl"),
            "DAGSTER_DEPLOYMENT": "local",
            "EVENTS_PATH": str(EVENTS["small_source"]),
            "PII_HASH_KEY": "test-hash-key",
            "ECB_RATES_FILE": currency_converter.CURRENCY_FILE,
        }.items():
            env.setenv(name, value)
        for name in [
            n for n in os.environ if n.startswith(("CRM_", "ERP_DB_", "DB_READ", "DB_PORT"))
        ]:
            env.delenv(name)
        for name in ("REPORTS_DIR", "SOURCE_TIMEZONE", "PIPELINE_FIRST_WEEK", "EVENT_TYPE_ALIASES"):
            env.delenv(name, raising=False)
        (tmp / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp / "home")) as instance:
            run_week(WEEK, instance=instance)
            origin = InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name="customer_assets", attribute="defs"),
                location_name="customer_assets",
            )
            with WorkspaceProcessContext(
                instance, InProcessWorkspaceLoadTarget(origin)
            ) as workspace:

                def query(name: str) -> dict:
                    result = execute_dagster_graphql(
                        workspace.create_request_context(),
                        ASSET_QUERY,
                        {"key": {"path": ["customer_analytics", name]}},
                    )
                    return result.data["assetNodeOrError"]

                yield query


def _lineage(node: dict) -> dict[str, list[str]]:
    """The latest materialization's column lineage: each column's sources as "<table>.<column>"."""
    materialization = node["assetMaterializations"][0]
    assert materialization["partition"] == WEEK
    entries = [
        e for e in materialization["metadataEntries"] if e["label"] == "dagster/column_lineage"
    ]
    assert len(entries) == 1 and "lineage" in entries[0], materialization["metadataEntries"]
    lineage = {}
    for column in entries[0]["lineage"]:
        sources = []
        for dep in column["columnDeps"]:
            assert dep["assetKey"]["path"][0] == "customer_analytics", dep
            sources.append(f"{dep['assetKey']['path'][1]}.{dep['columnName']}")
        lineage[column["columnName"]] = sorted(sources)
    return lineage


def _expected(name: str) -> dict[str, list[str]]:
    return {column: sorted(lineage.sources) for column, lineage in LINEAGE[name].items()}


def _assert_named_tables_are_upstream(node: dict, lineage: dict[str, list[str]]) -> None:
    upstream = {"/".join(key["path"]) for key in node["dependencyKeys"]}
    named = {
        f"customer_analytics/{source.split('.')[0]}"
        for sources in lineage.values()
        for source in sources
    }
    assert named <= upstream, named - upstream


def _schema(node: dict) -> dict[str, str]:
    entries = [e for e in node["metadataEntries"] if e["label"] == "dagster/column_schema"]
    assert len(entries) == 1, [e["label"] for e in node["metadataEntries"]]
    return {column["name"]: column["description"] for column in entries[0]["schema"]["columns"]}


def test_the_marts_materializations_carry_their_column_lineage_and_schemas(graphql):
    for name in MARTS:
        node = graphql(name)
        lineage = _lineage(node)
        assert lineage == _expected(name), name
        _assert_named_tables_are_upstream(node, lineage)
        schema = _schema(node)
        assert list(schema) == list(MODELS[name].to_schema().columns), name
        assert all("Lineage: " in description for description in schema.values()), schema
    sales = _lineage(graphql("mart_weekly_sales"))
    assert sales["revenue_usd"] == ["fact_transactions.amount_usd"]
    assert sales["category"] == [
        "dim_products.category",
        "dim_products.product_key",
        "fact_transactions.product_key",
    ]
    churn = _lineage(graphql("mart_churn_retention"))
    assert "customer_history.last_purchase_at" in churn["churned"]


def test_the_facts_materialization_carries_its_column_lineage(graphql):
    """Needs the line in assets/star.py that adds ``lineage_metadata("fact_transactions")`` to the
    facts' output (and ``customer_identity_map`` among the facts' deps)."""
    node = graphql("fact_transactions")
    lineage = _lineage(node)
    assert lineage["amount_usd"] == ["weekly_transactions.amount_usd"]
    assert "customer_identity_map.customer_id" in lineage["customer_id"]
    assert lineage == _expected("fact_transactions")
    _assert_named_tables_are_upstream(node, lineage)


def test_the_fact_tables_publish_their_column_schemas_with_lineage(graphql):
    """Needs assets/star.py to publish ``lineage_schema("fact_transactions")`` and the quarantine's
    schema."""
    facts = _schema(graphql("fact_transactions"))
    assert list(facts) == list(FactTransactions.to_schema().columns)
    assert "Lineage: copied from weekly_transactions.amount_usd." in facts["amount_usd"]
    quarantine = _schema(graphql("fact_transactions_quarantine"))
    assert list(quarantine) == list(FactTransactionsQuarantine.to_schema().columns)
