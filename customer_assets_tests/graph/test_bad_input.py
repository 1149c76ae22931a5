"""Issue 12, findings 3 to 5, against a real PostgreSQL: bytes that are not UTF-8, padded and
conflicting ids, an absurd amount, a transaction moved between weeks, a refused login and a refusing
replica."""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest

from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_sql_ascii_source, query

WEEKS = ["2026-11-09", "2026-11-16"]
RAW = dg.AssetSelection.keys(dg.AssetKey(["etl", "raw_transactions"]))


@pytest.fixture
def sql_ascii_source(pg_server):
    """The small source in a ``SQL_ASCII`` database: the server stores any bytes, as many legacy
    ones do."""
    dsn = create_sql_ascii_source(pg_server, "sql_ascii_source", crm_table=False)
    return dsn


def _clean_rows(dsn: str, week: str, n: int) -> list[str]:
    return [
        r[0]
        for r in query(
            dsn,
            """
        SELECT transaction_id FROM transactions WHERE status = 'completed' AND "timestamp" >= %s::date
          AND "timestamp" < %s::date + 7 AND currency = 'USD' AND customer_id IS NOT NULL AND amount > 1
          AND transaction_id NOT IN (SELECT transaction_id FROM demo_seed_dirty_rows WHERE transaction_id IS NOT NULL)
        ORDER BY transaction_id DESC LIMIT %s""",
            (week, week, n),
        )
    ]  # late in the week: room to backdate


def _copy(dsn: str, template: str, new_id: str, **changes: str) -> None:
    """A row like ``template``, with ``changes`` as SQL expressions over its columns."""
    columns = ["customer_id", "product_id", "amount", "currency", '"timestamp"', "status"]
    exprs = ", ".join(changes.get(c.strip('"'), c) for c in columns)
    query(
        dsn,
        f"INSERT INTO transactions (transaction_id, {', '.join(columns)}) "
        f"SELECT %s, {exprs} FROM transactions WHERE transaction_id = %s RETURNING 1",
        (new_id, template),
    )


def _quarantine(tmp, week: str) -> pd.DataFrame:
    return pd.read_parquet(tmp / "kept" / "etl" / "quarantined_transactions" / f"{week}.parquet")


def test_undecodable_text_is_quarantined_and_the_week_loads(pipeline_env, sql_ascii_source):
    """Finding 3: one product name with a Latin-1 byte (``\\xe9``) failed the whole week with "CSV
    conversion error to string: invalid UTF8 data", naming no row or column, after two retries."""
    tmp = pipeline_env("sql_ascii_source", events=False)
    week = WEEKS[1]
    template = _clean_rows(sql_ascii_source, week, 1)[0]
    query(
        sql_ascii_source,
        "INSERT INTO products (product_id, name, category, price) "
        "VALUES ('P-LATIN1', E'Caf\\xe9 cr\\xe8me', 'Grocery', 4.5) RETURNING 1",
    )
    _copy(sql_ascii_source, template, "BAD-BYTES-1", product_id="'P-LATIN1'")
    result = run_week(
        week,
        selection=dg.AssetSelection.groups("extract", "quality"),
        keep_intermediates_in=tmp / "kept",
    )
    assert result.success
    quarantined = _quarantine(tmp, week).set_index("transaction_id")
    assert quarantined.loc["BAD-BYTES-1", "primary_reason"] == "INVALID_ENCODING"
    assert quarantined.loc["BAD-BYTES-1", "invalid_encoding"] == "product_name"
    assert quarantined.loc["BAD-BYTES-1", "product_name"] == "Caf\ufffd cr\ufffdme"
    raw_meta = result.asset_materializations_for_node("etl__raw_transactions")[0].metadata
    assert raw_meta["invalid_encoding_rows"].value == 1
    report = json.loads((tmp / "data" / "reports" / week / "quality_report.json").read_text())
    assert report["quarantine_reasons"]["INVALID_ENCODING"] == 1
    validated = pd.read_parquet(tmp / "kept" / "etl" / "validated_transactions" / f"{week}.parquet")
    assert (
        template in set(validated["transaction_id"]) and "invalid_encoding" not in validated.columns
    )


def test_padded_conflicting_and_extreme_rows_never_reach_the_warehouse(
    pipeline_env, small_source, pg_server
):
    """Finding 4: a 1e12 USD amount was loaded and hid the other outliers; a duplicate id backdated
    into the week replaced the genuine row; ``'X '`` and ``'X'`` were loaded as two ids."""
    from customer_assets_tests.support.sources import create_source

    dsn = create_source(pg_server, "extreme_source", SMALL)
    tmp = pipeline_env("extreme_source", events=False)
    week = WEEKS[1]
    genuine, padded_from, huge_from = _clean_rows(dsn, week, 3)
    # A copy of a genuine row, backdated by an hour and with another amount.
    _copy(dsn, genuine, genuine, amount="7777.77", timestamp="\"timestamp\" - interval '1 hour'")
    # The same transaction twice, once with a trailing space in its id.
    _copy(dsn, padded_from, "PADDED-ID ")
    _copy(dsn, padded_from, "PADDED-ID")
    query(dsn, "DELETE FROM transactions WHERE transaction_id = %s RETURNING 1", (padded_from,))
    _copy(dsn, huge_from, "HUGE-AMOUNT", amount="1000000000000")
    run_week(week)
    loaded = warehouse(
        tmp / "warehouse.duckdb",
        "SELECT transaction_id, amount FROM customer_analytics.weekly_transactions",
    )
    ids = set(loaded["transaction_id"])
    assert genuine not in ids  # neither copy: which one is genuine cannot be told
    assert (
        "PADDED-ID" in ids
        and "PADDED-ID " not in ids
        and (loaded["transaction_id"] == "PADDED-ID").sum() == 1
    )
    assert "HUGE-AMOUNT" not in ids and loaded["amount"].max() < 1e6
    reasons = _quarantine_reasons(tmp, week)
    assert reasons == {**reasons, "AMOUNT_ABOVE_CEILING": 1}
    assert reasons["CONFLICTING_DUPLICATE"] == 2
    metrics = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.data_quality_metrics"
    )
    assert len(metrics) == 1
    anomalies = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.flagged_transactions"
    )
    # the outliers are still flagged: the huge amount no longer hides them
    assert not anomalies.empty


def _quarantine_reasons(tmp, week: str) -> dict:
    return json.loads((tmp / "data" / "reports" / week / "quality_report.json").read_text())[
        "quarantine_reasons"
    ]


def test_a_transaction_moved_to_another_week_is_loaded_once(pipeline_env, pg_server):
    """Finding 4: a transaction whose timestamp moved to another week was then in both weeks."""
    from customer_assets_tests.support.sources import create_source

    dsn = create_source(pg_server, "moving_source", SMALL)
    tmp = pipeline_env("moving_source", events=False)
    instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS:
        run_week(week, instance=instance)
    moved = _clean_rows(dsn, WEEKS[0], 1)[0]
    query(
        dsn,
        """UPDATE transactions SET "timestamp" = "timestamp" + interval '7 days'
                  WHERE transaction_id = %s RETURNING 1""",
        (moved,),
    )
    result = run_week(WEEKS[1], instance=instance)
    rows = warehouse(
        tmp / "warehouse.duckdb",
        f"""SELECT transaction_id, "timestamp" FROM
        customer_analytics.weekly_transactions WHERE transaction_id = '{moved}'""",
    )
    assert len(rows) == 1 and str(rows["timestamp"][0].date()) >= WEEKS[1]
    load = next(
        m for m in result.asset_materializations_for_node("customer_analytics__weekly_transactions")
    )
    assert load.metadata["moved_from_other_weeks"].value == 1
    check = result.get_asset_check_evaluations()
    unique = [c for c in check if c.check_name == "transaction_ids_unique"]
    assert unique and unique[0].passed and unique[0].metadata["duplicated_ids"].value == 0
    total = warehouse(
        tmp / "warehouse.duckdb",
        """SELECT count(*) AS n, count(DISTINCT transaction_id) AS d
                                                  FROM customer_analytics.weekly_transactions""",
    )
    assert total["n"][0] == total["d"][0]


@pytest.mark.parametrize(
    "variable,value,advice",
    [
        ("DB_USER", "no_such_role", "check DB_USER"),
        ("DB_NAME", "no_such_database", "check DB_NAME"),
    ],
)
def test_refused_login_fails_at_once_without_retry(
    pipeline_env, small_source, monkeypatch, variable, value, advice
):
    """Finding 5: a wrong login was retried for 2 min 10 s before failing. The retry policy waits 30
    s before its first retry, so a run that ends well within that made no retry."""
    pipeline_env("small_source", events=False)
    monkeypatch.setenv(variable, value)
    started = time.monotonic()
    result = run_week(WEEKS[1], selection=RAW, raise_on_error=False)
    elapsed = time.monotonic() - started
    assert not result.success and elapsed < 25
    assert not [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert advice in message and "Not retried" in message and value in message


def test_replica_fallback_is_in_the_run_log(pipeline_env, small_source, monkeypatch, tmp_path):
    """Finding 5: the fallback to the primary was on stderr only, never in the run's event log."""
    pipeline_env("small_source", events=False)
    monkeypatch.setenv("DB_READ_HOST", str(tmp_path / "no-replica-here"))
    instance = dg.DagsterInstance.ephemeral()
    result = run_week(WEEKS[1], selection=RAW, instance=instance)
    route = (
        result.asset_materializations_for_node("etl__raw_transactions")[0]
        .metadata["source_route"]
        .value
    )
    assert route.startswith("primary ") and "no-replica-here refused" in route
    logged = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "falling back to the primary" in (entry.user_message or "")
    ]
    assert logged and "no-replica-here" in logged[0]
