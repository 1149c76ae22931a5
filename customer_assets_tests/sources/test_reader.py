"""Issue 20, item 1, against a real PostgreSQL: every read of the source tolerates bytes that are
not UTF-8.

A ``SQL_ASCII`` database stores whatever bytes it is given (a product name in Latin-1, say). Each
reader keeps such a row, with U+FFFD in place of the bad bytes, and counts the values it replaced
instead of failing the week. Each reader test changes the seeded database inside its own transaction
and rolls it back, so the tests are independent; the asset-level test, whose steps read through
connections of their own, has a database of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg2
import pyarrow as pa
import pytest

from customer_assets.sources.copy_stream import copy_query, take_replaced_count
from customer_assets.sources.customers_and_products import (
    category_prices,
    known_customers,
    products_snapshot,
)
from customer_assets.sources.extract import RAW_ARROW_SCHEMA, stream_week
from customer_assets.sources.source_schema import read_source_schema
from customer_assets_tests.support.sources import create_sql_ascii_source

LATIN1_NAME, LATIN1_CATEGORY = r"E'Caf\xe9 cr\xe8me'", r"E'Boulangerie fran\xe7aise'"
WEEK_START = datetime(2026, 11, 9, tzinfo=timezone.utc)
WEEK_END = WEEK_START + timedelta(days=7)


@pytest.fixture(scope="module")
def sql_ascii_dsn(pg_server):
    """The small source, with its CRM table and ERP schema, in a ``SQL_ASCII`` database (as
    ``test_bad_input.sql_ascii_source``, under a name of its own)."""
    dsn = create_sql_ascii_source(pg_server, "sql_ascii_reader")
    return dsn


@pytest.fixture
def conn(sql_ascii_dsn):
    """A connection in UTC whose changes are rolled back after the test."""
    connection = psycopg2.connect(sql_ascii_dsn)
    with connection.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    yield connection
    connection.rollback()
    connection.close()


def _run(conn, statement: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _products(conn) -> int:
    return _run(conn, "SELECT count(*) FROM products WHERE product_id IS NOT NULL")[0][0]


def _latin1_product(conn) -> None:
    _run(
        conn,
        f"INSERT INTO products (product_id, name, category, price) "
        f"VALUES ('P-LATIN1', {LATIN1_NAME}, {LATIN1_CATEGORY}, 4.5)",
    )


def test_copy_query_replaces_bad_bytes_and_names_their_columns(conn):
    sql = (
        r"SELECT * FROM (VALUES ('R1', E'Caf\xe9', 'ok', E'\xff'), ('R2', 'clean', NULL, 'plain')) "
        "AS t(id, a, b, c) ORDER BY id"
    )
    schema = pa.schema(
        [("id", pa.string()), ("a", pa.string()), ("b", pa.string()), ("c", pa.string())]
    )
    table = copy_query(conn, sql, None, schema)
    assert table.schema.names == ["id", "a", "b", "c", "invalid_encoding"]
    assert table.to_pylist() == [
        {"id": "R1", "a": "Caf\ufffd", "b": "ok", "c": "\ufffd", "invalid_encoding": "a;c"},
        {"id": "R2", "a": "clean", "b": None, "c": "plain", "invalid_encoding": None},
    ]


def test_a_clean_read_reports_nothing_replaced(conn):
    schema = read_source_schema(conn)
    snapshot = products_snapshot(conn, schema)
    ids = [
        r[0]
        for r in _run(conn, "SELECT upper(trim(customer_id)) FROM customers ORDER BY 1 LIMIT 50")
    ]
    known = known_customers(conn, schema, ids)
    table = copy_query(conn, "SELECT 'a' AS x", None, pa.schema([("x", pa.string())]))
    assert len(snapshot) == _products(conn) and take_replaced_count(snapshot) == 0
    assert len(known) >= 50 and take_replaced_count(known) == 0
    assert take_replaced_count(category_prices(conn)) == 0
    assert table["invalid_encoding"].null_count == 1
    assert "invalid_encoding" not in snapshot.columns and "invalid_encoding" not in known.columns


def test_a_latin1_product_is_kept_and_counted(conn):
    _latin1_product(conn)
    snapshot = products_snapshot(conn, read_source_schema(conn, tables=("products",)))
    row = snapshot.set_index("product_id").loc["P-LATIN1"]
    assert row["name"] == "Caf\ufffd cr\ufffdme" and row["category"] == "Boulangerie fran\ufffdaise"
    assert row["price"] == 4.5
    assert len(snapshot) == _products(conn)
    assert take_replaced_count(snapshot) == 2  # two values, of one row
    assert list(snapshot.columns) == ["product_id", "name", "category", "price"]


def test_category_prices_keep_a_latin1_category(conn):
    """psycopg2 decodes fetched text as UTF-8 and raised UnicodeDecodeError on this category."""
    _latin1_product(conn)
    prices = category_prices(conn).set_index("category")["avg_price"]
    assert prices["Boulangerie fran\ufffdaise"] == 4.5
    assert take_replaced_count(category_prices(conn)) == 1


def test_a_latin1_customer_is_kept_and_counted(conn):
    customer = _run(conn, "SELECT customer_id FROM customers ORDER BY customer_id LIMIT 1")[0][0]
    _run(
        conn,
        r"UPDATE customers SET country = E'Espa\xf1a', segment = E'pr\xe9mium' WHERE customer_id = %s",
        (customer,),
    )
    known = known_customers(
        conn, read_source_schema(conn, tables=("customers",)), [customer.strip().upper()]
    )
    assert known[["country", "segment"]].to_dict("records") == [
        {"country": "Espa\ufffda", "segment": "pr\ufffdmium"}
    ]
    assert take_replaced_count(known) == 2
    assert str(known["signup_date"].dtype) == "datetime64[ns, UTC]"


def test_the_week_extract_marks_a_latin1_customer(conn):
    customer = _run(
        conn,
        """SELECT customer_id FROM transactions WHERE status = 'completed'
                             AND "timestamp" >= %s AND "timestamp" < %s AND customer_id IS NOT NULL LIMIT 1""",
        (WEEK_START, WEEK_END),
    )[0][0]
    _run(
        conn,
        r"UPDATE customers SET country = E'Espa\xf1a', segment = E'pr\xe9mium' WHERE customer_id = %s",
        (customer,),
    )
    expected = _run(
        conn,
        """SELECT count(*) FROM transactions WHERE status = 'completed' AND customer_id = %s
                               AND "timestamp" >= %s AND "timestamp" < %s""",
        (customer, WEEK_START, WEEK_END),
    )[0][0]
    table = stream_week(conn, WEEK_START, WEEK_END)
    assert table.schema == RAW_ARROW_SCHEMA
    marked = [r for r in table.to_pylist() if r["invalid_encoding"] is not None]
    assert len(marked) == expected
    assert all(
        r["customer_id"] == customer.strip()
        and r["country"] == "Espa\ufffda"
        and r["segment"] == "pr\ufffdmium"
        and r["invalid_encoding"] == "country;segment"
        for r in marked
    )


def test_a_latin1_crm_record_is_kept_and_counted(conn):
    from customer_assets.sources.crm_api import fetch_week_from_table

    _run(
        conn,
        r"UPDATE crm_customers SET subscription_tier = E'pr\xe9mium' WHERE ctid = "
        "(SELECT ctid FROM crm_customers WHERE updated_at >= %s AND updated_at < %s "
        "ORDER BY updated_at LIMIT 1)",
        (WEEK_START, WEEK_END),
    )
    crm = fetch_week_from_table(conn, WEEK_START, WEEK_END)
    frame = crm.frame()
    assert (frame["subscription_tier"] == "pr\ufffdmium").sum() == 1
    assert "invalid_encoding" not in frame.columns
    assert crm.invalid_encoding_values == 1 and crm.summary()["invalid_encoding_values"] == 1


def test_a_latin1_erp_record_is_kept_and_counted(conn):
    from customer_assets.resources.erp import DEFAULT_COLUMNS
    from customer_assets.sources.erp import fetch_week

    erp_id, modified = _run(
        conn, "SELECT erp_id, modified_at FROM erp.customers ORDER BY modified_at DESC LIMIT 1"
    )[0]
    _run(conn, r"UPDATE erp.customers SET country = E'Espa\xf1a' WHERE erp_id = %s", (erp_id,))
    frame = fetch_week(
        conn,
        "erp",
        "customers",
        DEFAULT_COLUMNS,
        modified - timedelta(days=1),
        modified + timedelta(seconds=1),
    )
    assert frame.set_index("customer_id").loc[erp_id, "country"] == "Espa\ufffda"
    assert take_replaced_count(frame) == 1
    assert list(frame.columns) == ["customer_id", "email", "phone", "country", "updated_at"]
    assert str(frame["updated_at"].dtype) == "datetime64[ns, UTC]"


@pytest.fixture
def latin1_source(pg_server):
    """A ``SQL_ASCII`` source of its own whose product and ERP record hold Latin-1 bytes for good:
    the assets read it through their own connections, so the change cannot be rolled back around
    them."""
    dsn = create_sql_ascii_source(pg_server, "sql_ascii_assets")
    with psycopg2.connect(dsn) as connection:
        _latin1_product(connection)
        _run(
            connection,
            r"UPDATE erp.customers SET country = E'Espa\xf1a' WHERE erp_id = (SELECT erp_id FROM "
            "erp.customers WHERE modified_at >= %s AND modified_at < %s ORDER BY erp_id LIMIT 1)",
            (WEEK_START, WEEK_END),
        )
    connection.close()
    return dsn


def test_the_assets_report_the_replaced_values(pipeline_env, latin1_source):
    """The count reaches the materialization's metadata, for the product snapshot and the ERP
    records."""
    import dagster as dg

    from customer_assets_tests.support.pipeline import run_week

    pipeline_env("sql_ascii_assets", events=False, erp=True)
    products, erp = (
        dg.AssetKey(["customer_analytics", "product_snapshots"]),
        dg.AssetKey(["etl", "erp_customers"]),
    )
    result = run_week(
        WEEK_START.date().isoformat(), selection=dg.AssetSelection.assets(products, erp)
    )
    assert result.success
    metadata = {
        event.asset_key: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    # the product's name and category
    assert metadata[products]["invalid_encoding_values"].value == 2
    assert metadata[erp]["invalid_encoding_values"].value == 1
