"""The whole weekly graph with DAGSTER_DEPLOYMENT=prod: the real source, BigQuery (the emulator) as
warehouse.

The same asset graph and resources as production (``resources_for("prod")``: the BigQuery warehouse
IO manager, ``PII_HASH_KEY`` as an ``EnvVar``), only ``BIGQUERY_EMULATOR_HOST`` points the client at
a local emulator with anonymous credentials. The prod executor is the multiprocess executor;
``dg.materialize`` runs in process, which is what these tests need and changes nothing about what
lands in the warehouse. Each test starts from an empty ``customer_analytics`` dataset.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.job_base import InMemoryJob

from customer_assets.definitions import build_definitions
from customer_assets.deployments import resources_for
from customer_assets.io_managers.bigquery_warehouse import BigQueryWarehouseIOManager
from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.partitions import week_bounds
from customer_assets.step_order import WEEK_WIDE_TAG
from customer_assets_tests.support.comparing import values_only
from customer_assets_tests.support.pipeline import ASSETS, run_week, warehouse
from customer_assets_tests.support.sources import BIGQUERY_PROJECT as PROJECT

DATASET = "customer_analytics"
WEEK, EARLIER = "2026-11-16", "2026-11-09"


def use_prod(monkeypatch, bigquery_endpoint, bigquery_client) -> None:
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "prod")
    monkeypatch.setenv("GCP_PROJECT_ID", PROJECT)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", str(bigquery_endpoint))
    for name in ("BIGQUERY_DATASET", "BIGQUERY_LOCATION", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    bigquery_client.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)


@pytest.fixture
def prod_env(pipeline_env, small_source, monkeypatch, bigquery_endpoint, bigquery_client):
    """pipeline_env's local paths and seeded source, plus the prod deployment pointed at the
    emulator."""
    tmp = pipeline_env("small_source")
    use_prod(monkeypatch, bigquery_endpoint, bigquery_client)
    return tmp


def test_a_three_table_source_without_crm_or_events_runs_in_prod(
    pipeline_env, plain_source, monkeypatch, bigquery_endpoint, bigquery_client
):
    pipeline_env("plain_source", events=False)
    monkeypatch.setenv("SOURCE_TIMEZONE", "America/New_York")
    use_prod(monkeypatch, bigquery_endpoint, bigquery_client)
    result = run_prod(WEEK)
    assert result.success
    transactions = bq_table(bigquery_client, "weekly_transactions", "transaction_id")
    assert len(transactions) > 1000 and transactions["customer_id"].str.fullmatch(r"\d+").all()
    history = bq_table(bigquery_client, "customer_history", "customer_id, currency")
    # The first week also counts the source's history before it (the opening balance, issue 23).
    opening = result.asset_materializations_for_node("customer_analytics__customer_history")[
        0
    ].metadata
    assert (
        history["transaction_count"].sum()
        == len(transactions) + opening["opening_balance_transactions"].value
    )
    assert opening["opening_balance_transactions"].value > 1000
    profiles = bq_table(bigquery_client, "weekly_customer_profiles", "customer_id")
    assert len(profiles) > 300 and not profiles["in_crm"].any() and not profiles["in_events"].any()
    assert len(bq_table(bigquery_client, "dim_customers", "customer_id, version")) == len(profiles)
    meta = result.asset_materializations_for_node("etl__unified_customer_profiles")[0].metadata
    assert meta["sources"].value == "database"


def run_prod(week: str) -> dg.ExecuteInProcessResult:
    resources = resources_for("prod")
    assert isinstance(resources["warehouse_io_manager"], BigQueryWarehouseIOManager)
    return dg.materialize(
        ASSETS, partition_key=week, resources=resources, instance=dg.DagsterInstance.ephemeral()
    )


def bq(bigquery_client, sql: str) -> pd.DataFrame:
    return bigquery_client.query(sql).result().to_arrow(create_bqstorage_client=False).to_pandas()


def bq_table(bigquery_client, table: str, order: str) -> pd.DataFrame:
    return bq(bigquery_client, f"SELECT * FROM `{PROJECT}.{DATASET}.{table}` ORDER BY {order}")


def bq_week(bigquery_client, table: str, column: str, week: str, order: str) -> pd.DataFrame:
    start, end = week_bounds(week)
    kind = {
        f.name: f.field_type
        for f in bigquery_client.get_table(f"{PROJECT}.{DATASET}.{table}").schema
    }[column]
    bound = (
        (lambda t: f"DATETIME '{t:%Y-%m-%d %H:%M:%S}'")
        if kind == "DATETIME"
        else (lambda t: f"TIMESTAMP '{t.isoformat()}'")
    )
    return bq(
        bigquery_client,
        f"SELECT * FROM `{PROJECT}.{DATASET}.{table}` WHERE `{column}` >= {bound(start)} "
        f"AND `{column}` < {bound(end)} ORDER BY {order}",
    )


def same_rows(
    bigquery: pd.DataFrame, duck: pd.DataFrame, drop: tuple[str, ...] = (), exact: bool = True
) -> None:
    """The same values; sums of floats (the marts) may differ in their last bits with the summation
    order."""
    pd.testing.assert_frame_equal(
        values_only(bigquery, drop),
        values_only(duck, drop),
        check_dtype=False,
        check_exact=exact,
        **({} if exact else {"rtol": 1e-9, "atol": 1e-9}),
    )


def loaded(result: dg.ExecuteInProcessResult, table: str) -> int:
    events = result.asset_materializations_for_node(f"{DATASET}__{table}")
    return events[0].metadata["dagster/row_count"].value


# --------------------------------------------------------------------------------------------------


def test_prod_definitions_load(prod_env):
    defs = build_definitions()  # DAGSTER_DEPLOYMENT=prod from the environment
    dg.Definitions.validate_loadable(defs)
    executor = defs.resolve_job_def("weekly_customer_pipeline").executor_def
    # wrapped to remove the run's intermediates at its end
    assert executor.name == dg.multiprocess_executor.name
    assert executor.config_schema is dg.multiprocess_executor.config_schema
    assert isinstance(defs.resources["warehouse_io_manager"], BigQueryWarehouseIOManager)


@pytest.mark.parametrize(
    "start_method, expected",
    [
        (None, ("forkserver", ["customer_assets.definitions"])),
        ({"spawn": {}}, ("spawn", [])),
    ],
    ids=["by default", "named by the run"],
)
def test_prod_steps_fork_from_a_server_that_imported_the_definitions(
    prod_env, monkeypatch, start_method, expected
):
    """Each step's process is a fork of a server that imported the definitions once in the run,
    not a new interpreter importing them again (~4 s of CPU a step), unless the run's configuration
    names a start method; the week-wide limit is still added."""
    monkeypatch.setenv("WEEK_WIDE_STEPS_AT_ONCE", "2")
    job = build_definitions().resolve_job_def("weekly_customer_pipeline")
    init = dg.InitExecutorContext(
        job=InMemoryJob(job),
        executor_def=job.executor_def,
        executor_config={"retries": {"enabled": {}}, "start_method": start_method},
        instance=dg.DagsterInstance.ephemeral(),
    )
    inner = job.executor_def.executor_creation_fn(init).inner  # within the final sweep
    assert (inner._start_method, inner._explicit_forkserver_preload) == expected
    assert inner._tag_concurrency_limits == [{"key": WEEK_WIDE_TAG, "limit": 2}]


def test_a_week_materialized_twice_is_there_once(prod_env, bigquery_client):
    first = run_prod(WEEK)
    transactions = bq_table(bigquery_client, "weekly_transactions", "transaction_id")
    profiles = bq_table(bigquery_client, "weekly_customer_profiles", "customer_id")
    metrics = bq_table(bigquery_client, "data_quality_metrics", "week_start")
    dimension = bq_table(bigquery_client, "dim_customers", "customer_id, version")
    assert len(transactions) > 1000 and transactions["transaction_id"].is_unique
    assert len(transactions) == loaded(first, "weekly_transactions")
    assert (
        len(profiles) == loaded(first, "weekly_customer_profiles")
        and profiles["customer_id"].is_unique
    )
    assert len(dimension) == loaded(first, "dim_customers") > 0

    second = run_prod(WEEK)
    again = bq(
        bigquery_client,
        f"""SELECT COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS ids
                           FROM `{PROJECT}.{DATASET}.weekly_transactions`""",
    )
    assert (
        again.loc[0, "n"]
        == again.loc[0, "ids"]
        == len(transactions)
        == loaded(second, "weekly_transactions")
    )
    same_rows(bq_table(bigquery_client, "weekly_transactions", "transaction_id"), transactions)

    profiles_again = bq_table(bigquery_client, "weekly_customer_profiles", "customer_id")
    assert len(profiles_again) == profiles_again["customer_id"].nunique() == len(profiles)
    same_rows(profiles_again, profiles, drop=("run_timestamp",))

    metrics_again = bq_table(bigquery_client, "data_quality_metrics", "week_start")
    assert len(metrics) == len(metrics_again) == 1
    assert metrics_again.loc[0, "passed_records"] == len(transactions)

    dimension_again = bq_table(bigquery_client, "dim_customers", "customer_id, version")
    assert len(dimension_again) == len(dimension)
    assert not dimension_again.duplicated(["customer_id", "version"]).any()
    assert dimension_again.groupby("customer_id")["is_current"].sum().eq(1).all()
    tables = sorted(t.table_id for t in bigquery_client.list_tables(f"{PROJECT}.{DATASET}"))
    assert tables == [
        "customer_history",
        "customer_identity_map",
        "data_quality_metrics",
        "dim_customers",
        "dim_date",
        "dim_products",
        "fact_transactions",
        "fact_transactions_quarantine",
        "flagged_transactions",
        "identity_merges",
        "mart_churn_retention",
        "mart_cohort_retention",
        "mart_weekly_sales",
        "pipeline_error_log",
        "product_snapshots",
        "transaction_quarantine",
        "weekly_customer_profiles",
        "weekly_transactions",
    ]  # no staging table left behind


def test_two_weeks_stay_apart(prod_env, bigquery_client):
    run_prod(EARLIER)
    earlier = bq_week(
        bigquery_client, "weekly_transactions", "timestamp", EARLIER, "transaction_id"
    )
    earlier_profiles = bq_week(
        bigquery_client, "weekly_customer_profiles", "week_start", EARLIER, "customer_id"
    )
    run_prod(WEEK)

    per_week = bq(
        bigquery_client,
        f"""SELECT week_start, COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS ids,
                                     MIN(`timestamp`) AS first, MAX(`timestamp`) AS last
                              FROM `{PROJECT}.{DATASET}.weekly_transactions` GROUP BY 1 ORDER BY 1""",
    )
    assert [str(d.date()) for d in per_week["week_start"]] == [EARLIER, WEEK]
    assert (per_week["n"] == per_week["ids"]).all() and (per_week["n"] > 1000).all()
    for _, row in per_week.iterrows():
        start, end = week_bounds(str(row.week_start.date()))
        assert start <= row["first"] and row["last"] < end
    same_rows(
        bq_week(bigquery_client, "weekly_transactions", "timestamp", EARLIER, "transaction_id"),
        earlier,
    )
    same_rows(
        bq_week(bigquery_client, "weekly_customer_profiles", "week_start", EARLIER, "customer_id"),
        earlier_profiles,
    )

    metrics = bq_table(bigquery_client, "data_quality_metrics", "week_start")
    assert [str(d.date()) for d in metrics["week_start"]] == [EARLIER, WEEK]
    weeks = bq(
        bigquery_client,
        f"""SELECT week_start, COUNT(*) AS n FROM `{PROJECT}.{DATASET}.weekly_customer_profiles`
                           GROUP BY 1 ORDER BY 1""",
    )
    assert [str(d.date()) for d in weeks["week_start"]] == [EARLIER, WEEK]
    dimension = bq_table(bigquery_client, "dim_customers", "customer_id, version")
    both = bq(
        bigquery_client,
        f"SELECT DISTINCT customer_id FROM `{PROJECT}.{DATASET}.weekly_customer_profiles`",
    )
    assert set(dimension["customer_id"]) == set(both["customer_id"])


def test_the_same_week_is_the_same_in_bigquery_and_duckdb(prod_env, bigquery_client, monkeypatch):
    run_prod(WEEK)
    local = prod_env / "local"
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "local")
    monkeypatch.setenv("DATA_DIR", str(local / "data"))
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(local / "warehouse.duckdb"))
    monkeypatch.setenv("ETL_LOG_DIR", str(local / "logs" / "etl"))
    assert isinstance(resources_for("local")["warehouse_io_manager"], DuckDBWarehouseIOManager)
    run_week(WEEK)

    duck = local / "warehouse.duckdb"
    for table, order, drop in (
        ("weekly_transactions", "transaction_id", ()),
        ("weekly_customer_profiles", "customer_id", ("run_timestamp",)),
        # Issue 15: the star schema and the marts, the same keys, columns and rows.
        ("dim_customers", "customer_id, version", ()),
        ("dim_products", "product_id, version", ()),
        ("dim_date", "date_key", ()),
        ("fact_transactions", "transaction_id", ()),
        ("mart_weekly_sales", "category, country, segment", ()),
        ("mart_churn_retention", "segment, value_tier, tenure_band", ()),
        ("mart_cohort_retention", "cohort_week", ()),
    ):
        bq_columns = [
            f.name for f in bigquery_client.get_table(f"{PROJECT}.{DATASET}.{table}").schema
        ]
        duck_columns = warehouse(duck, f'DESCRIBE "{DATASET}"."{table}"')["column_name"].tolist()
        assert bq_columns == duck_columns, table
        assert all(c == c.lower() for c in bq_columns), table
        in_duck = warehouse(duck, f'SELECT * FROM "{DATASET}"."{table}" ORDER BY {order}')
        in_bq = bq_table(bigquery_client, table, order)
        assert len(in_bq) == len(in_duck) > 0, table
        same_rows(in_bq, in_duck, drop, exact=not table.startswith("mart_"))
