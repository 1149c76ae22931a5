"""List parameters (``WarehouseSQL.unnest``): the same rows in DuckDB, where a list is an Arrow table
registered for its statement, and in BigQuery, where it is an array parameter; and asked in the
parts a warehouse's parameters hold (``in_parts``)."""

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets_tests.sql.conftest import SCHEMA

IDS_SQL = "SELECT id FROM {table} WHERE id IN (SELECT i FROM {ids}) ORDER BY id"


def _table(warehouse) -> str:
    table = warehouse.table(SCHEMA, "ids")
    warehouse.execute(f"CREATE TABLE {table} (id {{STR}})")
    warehouse.execute(
        f"INSERT INTO {table} (id) VALUES ('a'), ('b'), ('c'), ('C'), ('d'), ('e'), ('f')"
    )
    return table


def _found(warehouse, table: str, ids) -> list[str]:
    return warehouse.query(IDS_SQL, {"ids": ids}, table=table, ids=warehouse.unnest("ids", "i"))[
        "id"
    ].tolist()


@pytest.mark.parametrize(
    "form",
    [
        list,
        lambda v: pd.Series(v, dtype="str").array,  # what ``Series.unique()`` gives
        lambda v: pa.array(v, pa.large_string()),
        lambda v: pa.chunked_array([v[:1], v[1:]], pa.string()),
    ],
    ids=["list", "pandas", "arrow", "chunked"],
)
def test_a_list_parameter_selects_its_rows_in_every_form(warehouse, form):
    table = _table(warehouse)
    assert _found(warehouse, table, form(["c", "f", "x", "a"])) == ["a", "c", "f"]


def test_an_empty_list_and_a_null_select_nothing_more(warehouse):
    table = _table(warehouse)
    assert _found(warehouse, table, []) == []
    assert _found(warehouse, table, ["b", None]) == ["b"]


def test_a_list_longer_than_a_part_is_asked_in_parts(warehouse, monkeypatch):
    table = _table(warehouse)
    monkeypatch.setattr(type(warehouse), "list_rows", 2)
    ids = pd.Series(["a", "b", "c", "C", "e", "x", "f"], dtype="str").unique()
    parts = list(warehouse.in_parts(ids))
    assert [len(p) for p in parts] == [2, 2, 2, 1]
    found = sorted(f for part in parts for f in _found(warehouse, table, part))
    assert found == ["C", "a", "b", "c", "e", "f"]
    assert list(warehouse.in_parts([])) == []


def test_duckdb_asks_a_week_of_ids_at_once_and_keeps_no_list_after_the_statement(tmp_path):
    """DuckDB has no limit: the week's ids are one statement, and its list is gone after it, even
    when the statement fails."""
    duck = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    duck.execute(f"CREATE SCHEMA {SCHEMA}")
    table = duck.table(SCHEMA, "t")
    duck.execute(f"CREATE TABLE {table} AS SELECT 't' || i::VARCHAR AS id FROM range(700000) r(i)")
    ids = pd.Series([f"t{i}" for i in range(0, 1_400_000, 2)], dtype="str").unique()
    assert len(list(duck.in_parts(ids))) == 1
    assert len(duck.query(IDS_SQL, {"ids": ids}, table=table, ids=duck.unnest("ids", "i"))) == (
        350_000
    )
    with pytest.raises(duckdb.Error):
        duck.query("SELECT no_such_column FROM {ids}", {"ids": ["a"]}, ids=duck.unnest("ids", "i"))
    with duck.get_connection() as con, pytest.raises(duckdb.CatalogException):
        con.execute('SELECT * FROM "__list_ids"')


@pytest.mark.parametrize("warehouse", ["bigquery"], indirect=True)  # DuckDB's lists have no limit
def test_bigquery_refuses_a_list_longer_than_a_part_naming_the_remedy(warehouse, monkeypatch):
    """A caller that forgets ``in_parts`` fails at once, in tests, not in production on a week
    whose list outgrew a request."""
    table = _table(warehouse)
    monkeypatch.setattr(type(warehouse), "list_rows", 2)
    with pytest.raises(ValueError, match=r"@ids holds 3 values, more than the 2 .*in_parts"):
        _found(warehouse, table, ["a", "b", "c"])
