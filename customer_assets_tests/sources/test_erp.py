"""The ERP read as the source is (one connection setup), against a real PostgreSQL: the same
read-only UTC session and timeouts, and refusals that name the ERP's variables."""

from datetime import datetime, timezone

import dagster as dg
import psycopg2
import psycopg2.errors
import pytest

from customer_assets.demo.sources import DemoErpSource
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets_tests.support.sources import query, socket_dir

START, END = datetime(1970, 1, 5, tzinfo=timezone.utc), datetime(2100, 1, 4, tzinfo=timezone.utc)


def _erp(pg_server, **overrides) -> ErpSource:
    return ErpSource(
        **{"host": socket_dir(pg_server), "user": "postgres", "dbname": "small_source", **overrides}
    )


def test_the_erp_session_is_the_sources_read_only_utc_and_bounded(pg_server, small_source):
    erp = _erp(pg_server)
    with erp._connect(PostgresSource(host="unused")) as conn, conn.cursor() as cur:
        cur.execute("SHOW TimeZone")
        assert cur.fetchone()[0] == "UTC"
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "30min"
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE erp_must_not_write (x int)")
    seeded = query(small_source, "SELECT count(*) FROM erp.customers")[0][0]
    assert seeded and len(erp.fetch_week(START, END, PostgresSource(host="unused"))) == seeded


def test_an_erp_refusal_names_the_erps_variables_and_is_not_retried(pg_server, small_source):
    with pytest.raises(dg.Failure) as raised:
        _erp(pg_server, user="no_such_erp_role").fetch_week(START, END, PostgresSource(host="x"))
    text = raised.value.description
    assert text.startswith("ERP database at ") and "ERP_DB_USER" in text, text
    assert "refused the connection" in text and 'role "no_such_erp_role" does not exist' in text
    assert "The source PostgreSQL" not in text, text  # the source's advice names DB_USER
    assert raised.value.allow_retries is False


def test_an_unreachable_erp_is_retried_and_its_password_never_shown(pg_server):
    erp = _erp(pg_server, host="127.0.0.1", port=1, password="s3cret-erp", connect_timeout=1)
    with pytest.raises(dg.Failure) as raised:
        erp.fetch_week(START, END, PostgresSource(host="unused"))
    assert "unreachable" in raised.value.description and raised.value.allow_retries is not False
    assert "s3cret-erp" not in raised.value.description


def test_the_demo_erp_reads_the_source_databases_schema_or_has_none(pg_server, small_source):
    source = PostgresSource(host=socket_dir(pg_server), user="postgres", dbname="small_source")
    seeded = query(small_source, "SELECT count(*) FROM erp.customers")[0][0]
    assert len(DemoErpSource().fetch_week(START, END, source)) == seeded
    assert DemoErpSource(table="no_such_table").fetch_week(START, END, source).empty
    assert ErpSource().kind == "none" and ErpSource().fetch_week(START, END, source).empty
