"""Issue 20: guarantees that hold for every asset of the definitions, new ones included.

The cases are derived from ``pipeline_assets()`` (``support/matrix.py``), never from a hand-written
list: an empty first week on a fresh warehouse and an empty week between loaded weeks, a one-row
week, a ``SQL_ASCII`` source with a non-UTF-8 byte in each text column of each table the graph reads
and ``NaN``, ``Infinity`` and 1e12 in each numeric column, and each asset step failing in turn. One
warehouse per case family.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from customer_assets.definitions import pipeline_assets
from customer_assets_tests.support.matrix import asset_steps, assets_with_failing, downstream_of
from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import (
    EVENTS,
    SMALL,
    create_source,
    create_sql_ascii_source,
    query,
)

ASSETS = pipeline_assets()
ALL_KEYS = {key for a in asset_steps(ASSETS).values() for key in a.keys}
STEPS = sorted(asset_steps(ASSETS))
WEEK = "2026-11-16"
TABLES_READ = ("customers", "transactions", "products", "crm_customers", "erp.customers")


def _week_sql(column: str = '"timestamp"') -> str:
    return f"{column} >= %(start)s::timestamptz AND {column} < %(start)s::timestamptz + interval '7 days'"


def _left_on_disk(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]


def _checks_hold(result: dg.ExecuteInProcessResult) -> list[str]:
    """Checks that failed with ERROR severity (a warning, e.g. "empty week", is allowed)."""
    return [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]


def _materialized(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {e.asset_key for e in result.get_asset_materialization_events()}


def _null_typed_columns(duckdb_path: Path) -> list[tuple]:
    return warehouse(
        duckdb_path,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE data_type IN ('NULL', '\"NULL\"')",
    ).values.tolist()


# --- an empty week first, an empty week between loaded weeks, a one-row week
# ---------------------------------


@pytest.fixture(scope="module")
def quiet_source(pg_server, tmp_path_factory):
    """The small source (CRM table, ERP, events) with no completed transaction in the week of
    2026-11-09, and one in the week of 2026-11-16."""
    EVENTS["quiet_source"] = tmp_path_factory.mktemp("events") / "quiet_source"
    dsn = create_source(pg_server, "quiet_source", SMALL, EVENTS["quiet_source"])
    query(dsn, f"DELETE FROM transactions WHERE {_week_sql()} RETURNING 1", {"start": "2026-11-09"})
    keep = query(
        dsn,
        f"""SELECT transaction_id FROM transactions WHERE status = 'completed' AND {_week_sql()}
        AND currency = 'USD' AND amount > 1 AND customer_id IN (SELECT customer_id FROM customers)
        AND product_id IN (SELECT product_id FROM products) AND transaction_id NOT IN
            (SELECT transaction_id FROM demo_seed_dirty_rows WHERE transaction_id IS NOT NULL)
        ORDER BY transaction_id LIMIT 1""",
        {"start": WEEK},
    )[0][0]
    query(
        dsn,
        f"DELETE FROM transactions WHERE {_week_sql()} AND transaction_id IS DISTINCT FROM %(keep)s "
        "RETURNING 1",
        {"start": WEEK, "keep": keep},
    )
    return dsn


@pytest.mark.parametrize("sources", ["three tables", "every source"])
def test_empty_and_one_row_weeks_load_every_asset_with_declared_types(
    sources, pipeline_env, quiet_source
):
    """An empty first week on a fresh warehouse, a normal week, an empty week between loaded weeks,
    a one-row week: every asset of the definitions materializes, no check fails, no warehouse column
    is typed NULL; with the database alone, and with the CRM, the ERP and the events."""
    every = sources == "every source"
    tmp = pipeline_env("quiet_source", crm=every, erp=every, events=every)
    for week, rows in (("2026-10-26", 0), ("2026-11-02", None), ("2026-11-09", 0), (WEEK, 1)):
        result = run_week(week, raise_on_error=False)
        failures = [e.step_key for e in result.all_events if e.is_step_failure]
        assert result.success, (week, failures)
        assert _materialized(result) == ALL_KEYS, (week, ALL_KEYS - _materialized(result))
        assert not _checks_hold(result), (week, _checks_hold(result))
        loaded = warehouse(
            tmp / "warehouse.duckdb",
            "SELECT count(*) AS n FROM customer_analytics.weekly_transactions "
            f"WHERE week_start = TIMESTAMP '{week}'",
        )["n"].iloc[0]
        assert rows is None and loaded > 100 or loaded == rows, (week, loaded)
        assert not _null_typed_columns(tmp / "warehouse.duckdb"), week
        assert not _left_on_disk(tmp), week


def test_a_null_typed_column_left_by_older_code_is_repaired_by_the_next_week(
    pipeline_env, quiet_source
):
    """Older code created `imputed_fields` typed NULL after an empty first week; the next week
    failed forever with `SchemaMismatchError`. Now that week's run repairs the column and loads."""
    tmp = pipeline_env("quiet_source")
    assert run_week("2026-11-02").success
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE OR REPLACE TABLE customer_analytics.weekly_customer_profiles AS SELECT * REPLACE "
            "(NULL AS imputed_fields) FROM customer_analytics.weekly_customer_profiles"
        )
    assert _null_typed_columns(tmp / "warehouse.duckdb") == [
        ["weekly_customer_profiles", "imputed_fields"]
    ]
    result = run_week(WEEK, raise_on_error=False)
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    assert not _null_typed_columns(tmp / "warehouse.duckdb")


# --- hostile values in every column of every table the graph reads
# -------------------------------------------


@pytest.fixture(scope="module")
def hostile_source(pg_server):
    """The small source in a ``SQL_ASCII`` database, with a Latin-1 byte in one row of each text
    column and NaN, Infinity and 1e12 in rows of each numeric column of each table the graph reads
    (rows of the week)."""
    dsn = create_sql_ascii_source(pg_server, "hostile_source")
    columns = query(
        dsn,
        """SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema || '.' || table_name IN ('public.customers', 'public.transactions', 'public.products',
              'public.crm_customers', 'erp.customers')
        ORDER BY 1, 2, ordinal_position""",
    )
    assert {f"{s}.{t}" for s, t, _, _ in columns} >= {
        "public.customers",
        "erp.customers",
        "public.crm_customers",
    }
    for n, (schema, table, column, kind) in enumerate(columns):
        target = f'"{schema}"."{table}"'
        if kind in ("text", "character varying"):
            _spoil(dsn, target, f'"{column}" = "{column}" || E\'\\xe9\'', n, 1)
        elif kind in ("numeric", "double precision", "real"):
            if kind == "numeric":
                query(
                    dsn,
                    f'ALTER TABLE {target} ALTER COLUMN "{column}" TYPE numeric RETURNING 1'.replace(
                        " RETURNING 1", "; SELECT 1"
                    ),
                )
            for m, value in enumerate(("'NaN'", "'Infinity'", "1e12")):
                _spoil(dsn, target, f'"{column}" = {value}', n * 3 + m, 1)
    return dsn


def _spoil(dsn: str, table: str, assignment: str, offset: int, rows: int) -> None:
    """Apply ``assignment`` to ``rows`` rows of ``table`` that the week of WEEK reads, picked by
    ``offset``."""
    # The customers and products with the fewest transactions in the week: a spoiled id or attribute
    # quarantines their rows, and the week must stay below the quarantine threshold.
    rarest = (
        "{0} IN (SELECT {0} FROM transactions WHERE {1} GROUP BY {0} ORDER BY count(*), {0} "
        "OFFSET {2} LIMIT {3})"
    )
    week_rows = {
        '"public"."transactions"': f"ctid IN (SELECT ctid FROM transactions WHERE status = 'completed' AND "
        f"{_week_sql()} ORDER BY transaction_id OFFSET {offset} LIMIT {rows})",
        '"public"."customers"': rarest.format("customer_id", _week_sql(), offset, rows),
        '"public"."products"': rarest.format("product_id", _week_sql(), offset, rows),
    }
    where = week_rows.get(
        table, f"ctid IN (SELECT ctid FROM {table} ORDER BY ctid OFFSET {offset} LIMIT {rows})"
    )
    query(dsn, f"UPDATE {table} SET {assignment} WHERE {where} RETURNING 1", {"start": WEEK})


def test_hostile_values_in_every_source_column_never_fail_the_week(
    pipeline_env, hostile_source, monkeypatch
):
    tmp = pipeline_env("hostile_source", events=False, erp=True)
    # the CRM table read through the source reader
    monkeypatch.setenv("CRM_DEMO_TABLE", "crm_customers")
    result = run_week(WEEK, raise_on_error=False)
    failures = [
        (e.step_key, str(e.step_failure_data.error)[:300])
        for e in result.all_events
        if e.is_step_failure
    ]
    assert result.success, failures
    assert _materialized(result) == ALL_KEYS
    raw = result.asset_materializations_for_node("etl__raw_transactions")[0].metadata
    assert raw["invalid_encoding_rows"].value > 0
    snapshot = result.asset_materializations_for_node("customer_analytics__product_snapshots")[
        0
    ].metadata
    assert snapshot["invalid_encoding_values"].value > 0
    # the shop's records of the week's persons, read for their profiles
    profiles = result.asset_materializations_for_node("etl__unified_customer_profiles")[0]
    assert profiles.metadata["invalid_encoding_values"].value > 0
    report = json.loads((tmp / "data" / "reports" / WEEK / "quality_report.json").read_text())
    assert report["quarantine_reasons"].get("INVALID_ENCODING", 0) > 0
    assert not _left_on_disk(tmp)


# --- each asset step failing in turn
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_a_failing_step_stops_only_what_depends_on_it_and_the_run_cleans_up(
    step, pipeline_env, small_source, tmp_path_factory, monkeypatch
):
    """The run fails naming the step; no other step fails (no input of theirs was removed before
    they ran); every asset that does not depend on it loads; nothing is left under data/etl;
    failed_*.json names it."""
    tmp = pipeline_env("small_source", crm=True, erp=True)
    # one warehouse for the family
    shared = tmp_path_factory.getbasetemp() / "failing_steps_warehouse.duckdb"
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(shared))
    result = run_week(WEEK, assets=assets_with_failing(step), raise_on_error=False)
    assert not result.success
    failed = {
        e.step_key: str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure
    }
    assert list(failed) == [step] and "injected failure" in failed[step], failed
    independent = ALL_KEYS - downstream_of(ASSETS, step)
    assert independent <= _materialized(result), independent - _materialized(result)
    assert not _left_on_disk(tmp)
    records = list((tmp / "logs" / "etl").glob("failed_*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["step"] == step and record["week_start"] == WEEK and record["remaining"] == []


# --- in production: BigQuery (the emulator)
# ----------------------------------------------------------------------


def _run_prod(week: str, assets: list | None = None) -> dg.ExecuteInProcessResult:
    from customer_assets.deployments import resources_for

    return dg.materialize(
        assets or ASSETS,
        partition_key=week,
        resources=resources_for("prod"),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_in_production_an_empty_first_week_then_a_normal_week_and_a_failing_step(
    pipeline_env, quiet_source, monkeypatch, bigquery_endpoint, bigquery_client
):
    from customer_assets_tests.graph.test_prod_graph import DATASET, PROJECT, use_prod

    tmp = pipeline_env("quiet_source", events=False)
    use_prod(monkeypatch, bigquery_endpoint, bigquery_client)
    for week in ("2026-10-26", "2026-11-02"):
        result = _run_prod(week)
        assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
        assert _materialized(result) == ALL_KEYS and not _checks_hold(result)
    tables = {t.table_id: t for t in bigquery_client.list_tables(f"{PROJECT}.{DATASET}")}
    profiles = bigquery_client.get_table(tables["weekly_customer_profiles"].reference)
    assert {f.name: f.field_type for f in profiles.schema}["imputed_fields"] == "STRING"
    step = "customer_analytics__dim_products"
    result = _run_prod(WEEK, assets_with_failing(step))
    assert [e.step_key for e in result.all_events if e.is_step_failure] == [step]
    assert ALL_KEYS - downstream_of(ASSETS, step) <= _materialized(result)
    assert not _left_on_disk(tmp)
    assert (
        json.loads(next((tmp / "logs" / "etl").glob("failed_*.json")).read_text())["step"] == step
    )
