"""Sources as users have them: only customers, transactions and products, no CRM and no events;
naive timestamps and integer ids; a missing column or a configured-but-broken source fails at once,
clearly."""

import json
import re
import shutil

import dagster as dg
import pytest

from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_source, query

WEEK = "2026-11-16"


def test_a_three_table_source_without_crm_or_events_runs_the_whole_week(
    pipeline_env, plain_source, small_source, monkeypatch
):
    reference = pipeline_env("small_source")  # the same seed as timestamptz and text ids
    run_week(WEEK)
    expected = warehouse(
        reference / "warehouse.duckdb",
        'SELECT "timestamp", amount, currency FROM '
        "customer_analytics.weekly_transactions ORDER BY transaction_id",
    )

    shutil.rmtree(reference)  # the plain source's run starts from nothing
    reference.mkdir()
    tmp = pipeline_env("plain_source", events=False)
    monkeypatch.setenv("SOURCE_TIMEZONE", "America/New_York")
    result = run_week(WEEK)
    assert result.success
    loaded = warehouse(
        tmp / "warehouse.duckdb",
        'SELECT transaction_id, customer_id, "timestamp", amount, currency '
        "FROM customer_analytics.weekly_transactions ORDER BY transaction_id",
    )
    # The same rows at the same instants: naive New York wall time read back as UTC.
    assert loaded[["timestamp", "amount", "currency"]].equals(expected)
    assert loaded["customer_id"].str.fullmatch(r"\d+").all()
    profiles = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.weekly_customer_profiles"
    )
    assert len(profiles) > 300 and not profiles["in_crm"].any() and not profiles["in_events"].any()
    assert profiles["customer_id"].str.fullmatch(r"\d+").all()
    dim = warehouse(
        tmp / "warehouse.duckdb", "SELECT customer_id FROM customer_analytics.dim_customers"
    )
    assert len(dim) == len(profiles) and dim["customer_id"].str.fullmatch(r"\d+").all()

    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta["etl/unified_customer_profiles"]["sources"].value == "database"
    assert meta["etl/crm_customers"]["source"].value == "none"
    assert meta["etl/customer_event_aggregates"]["source"].value == "none"
    summaries = list((tmp / "logs" / "etl").glob("etl_*.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["sources"] == ["database"] and summary["cleanup"]["remaining"] == []


def test_a_missing_column_fails_at_once_naming_table_and_column(pipeline_env, pg_server):
    dsn = create_source(pg_server, "no_currency", SMALL)
    query(
        dsn,
        "ALTER TABLE transactions DROP COLUMN currency; ALTER TABLE products ALTER COLUMN price TYPE text; "
        "SELECT 1",
    )
    pipeline_env("no_currency")
    result = run_week(WEEK, selection=["etl/raw_transactions"], raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "column transactions.currency is missing" in failure.message
    assert "column products.price is text; it must be a number" in failure.message
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert restarts == []  # no retry can fix a schema


def test_a_configured_landing_zone_that_is_missing_fails_clearly(
    pipeline_env, small_source, monkeypatch, tmp_path
):
    pipeline_env("small_source")
    monkeypatch.setenv("EVENTS_PATH", str(tmp_path / "not-mounted"))
    result = run_week(WEEK, selection=["etl/customer_event_aggregates"], raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "not-mounted is configured but is not a readable directory" in message


def test_the_demo_partitions_start_on_the_demo_first_week():
    """Issue 13: partitions started on 2026-01-05, months before the demo's data, so the UI offered
    impossible weeks and "Materialize all" hit them."""
    from datetime import timedelta

    from customer_assets.demo.seed import SeedConfig
    from customer_assets.weeks import DEMO_FIRST_WEEK

    config = SeedConfig()
    assert (config.end_week - timedelta(weeks=config.weeks - 1)).isoformat() == DEMO_FIRST_WEEK


@pytest.mark.parametrize(
    "name,value,says",
    [
        ("QUALITY_FAIL_RATE", "abc", "must be a fraction between 0 and 1"),
        ("EVENTS_MAX_MALFORMED_SHARE", "1.5", "must be a fraction between 0 and 1"),
        ("MAX_AMOUNT_USD", "-3", "must be a positive amount in USD"),
        ("LATE_CHANGE_WEEKS", "0", "must be a whole number of weeks"),
        ("PREVIOUS_WEEK_WAIT_SECONDS", "6h", "must be a whole number"),
    ],
)
def test_a_bad_setting_names_the_variable(monkeypatch, name, value, says):
    """Issue 12, finding 5: `QUALITY_FAIL_RATE=abc` gave a bare ValueError."""
    from customer_assets.settings import settings_from_env

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}='{re.escape(value)}' {says}"):
        settings_from_env()
