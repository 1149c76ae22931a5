"""Issue 21, items 1, 2 and 8, against a real PostgreSQL: a reused transaction id must not delete
another week's loaded row, a source that archives a week must not make the pipeline wipe it, and a
re-run stopped by a blocking check must say in its metrics row that the warehouse still holds the
previous load. After each scenario, the facts, the sales mart, the quality metrics and
``weekly_transactions`` agree week by week."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from customer_assets.alerts import Alerts
from customer_assets.deployments import resources_for
from customer_assets.late_changes import source_changes_sensor
from customer_assets_tests.support.pipeline import ASSETS, run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_source, query

WEEKS = ["2026-11-02", "2026-11-09", "2026-11-16"]
# The sensor, evaluated directly (its default status is build_definitions' to decide).
source_changes = source_changes_sensor(dg.DefaultSensorStatus.RUNNING)
T = "customer_analytics"


def _clean_row(dsn: str, week: str) -> tuple[str, str, str]:
    """A clean USD transaction of ``week`` (id, customer, product) that no dirty row of the seed
    touches."""
    return query(
        dsn,
        """
        SELECT transaction_id, customer_id, product_id FROM transactions
        WHERE status = 'completed' AND "timestamp" >= %s::date + 1 AND "timestamp" < %s::date + 6
          AND currency = 'USD' AND amount > 1 AND customer_id IN (SELECT customer_id FROM customers)
          AND product_id IN (SELECT product_id FROM products) AND transaction_id NOT IN
              (SELECT transaction_id FROM demo_seed_dirty_rows WHERE transaction_id IS NOT NULL)
          AND transaction_id IN (SELECT transaction_id FROM transactions GROUP BY 1 HAVING count(*) = 1)
        ORDER BY transaction_id LIMIT 1""",
        (week, week),
    )[0]


def _agreement(path: Path) -> pd.DataFrame:
    """Per week: rows and USD of weekly_transactions, fact_transactions (+ its quarantine),
    mart_weekly_sales, and the quality metrics' passed rows."""
    return warehouse(
        path,
        f"""
        WITH w AS (SELECT date_trunc('week', "timestamp" AT TIME ZONE 'UTC') AS week, count(*) AS tx,
                          round(sum(amount_usd), 2) AS usd FROM {T}.weekly_transactions GROUP BY 1),
             f AS (SELECT week_start AS week, count(*) AS facts, round(sum(amount_usd), 2) AS fact_usd
                   FROM (SELECT week_start, amount_usd FROM {T}.fact_transactions
                         UNION ALL SELECT week_start, amount_usd FROM {T}.fact_transactions_quarantine) GROUP BY 1),
             m AS (SELECT week_start AS week, sum(orders) AS orders, round(sum(revenue_usd), 2) AS revenue
                   FROM {T}.mart_weekly_sales GROUP BY 1),
             q AS (SELECT week_start AS week, passed_records FROM {T}.data_quality_metrics)
        SELECT week, tx, facts, orders, passed_records, usd, fact_usd, revenue
        FROM w FULL JOIN f USING (week) FULL JOIN m USING (week) FULL JOIN q USING (week) ORDER BY 1""",
    ).fillna(0)


def assert_tables_agree(path: Path) -> pd.DataFrame:
    table = _agreement(path)
    for column in ("facts", "orders", "passed_records"):
        assert (table[column] == table["tx"]).all(), (
            f"{column} differs from weekly_transactions:\n{table}"
        )
    for column in ("fact_usd", "revenue"):
        assert ((table[column] - table["usd"]).abs() < 0.05).all(), f"{column} differs:\n{table}"
    return table


def _weeks_of(path: Path, table: str, ids: list[str]) -> dict[str, list[str]]:
    """Each id's weeks in ``table``."""
    listed = ", ".join(f"'{i}'" for i in ids)
    rows = warehouse(
        path,
        f"""SELECT transaction_id, strftime(date_trunc('week', "timestamp" AT TIME ZONE 'UTC'),
        '%Y-%m-%d') AS week FROM {T}.{table} WHERE transaction_id IN ({listed}) ORDER BY 1, 2""",
    )
    return {i: rows.loc[rows["transaction_id"] == i, "week"].tolist() for i in ids}


@pytest.fixture
def source(pg_server, pipeline_env, request):
    dbname = f"loss_{request.node.name[5:40]}".lower()
    dsn = create_source(pg_server, dbname, SMALL)
    tmp = pipeline_env(dbname, events=False)
    return dsn, tmp, tmp / "warehouse.duckdb"


def test_a_reused_id_never_deletes_another_weeks_row_and_a_moved_one_still_moves(source):
    """Item 1: ``T`` of 11-02, reused in 11-18 with other content, removed the 11-02 row
    (``moved_from_other_weeks: 1``) while the metrics and the mart kept counting it; re-running
    11-02 moved it back. A transaction whose timestamp was edited from 11-09 into 11-16 is still
    moved."""
    dsn, tmp, wh = source
    reused, _, _ = _clean_row(dsn, WEEKS[0])
    moved, _, _ = _clean_row(dsn, WEEKS[1])
    instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS[:2]:
        run_week(week, instance=instance)
    query(
        dsn,
        """INSERT INTO transactions SELECT transaction_id, customer_id, product_id, 99.99, 'USD',
        '2026-11-18 12:00+00', status FROM transactions WHERE transaction_id = %s RETURNING 1""",
        (reused,),
    )
    query(
        dsn,
        """UPDATE transactions SET "timestamp" = '2026-11-17 09:30+00' WHERE transaction_id = %s
        RETURNING 1""",
        (moved,),
    )

    result = run_week(WEEKS[2], instance=instance, keep_intermediates_in=tmp / "kept")
    quarantined = pd.read_parquet(
        tmp / "kept" / "etl" / "quarantined_transactions" / f"{WEEKS[2]}.parquet"
    )
    assert (
        quarantined.set_index("transaction_id").loc[reused, "primary_reason"]
        == "DUPLICATE_ACROSS_WEEKS"
    )
    load = result.asset_materializations_for_node("customer_analytics__weekly_transactions")[0]
    assert load.metadata["moved_from_other_weeks"].value == 1  # the edited one, not the reused one
    expected = {reused: [WEEKS[0]], moved: [WEEKS[2]]}
    for table in ("weekly_transactions", "fact_transactions"):
        assert _weeks_of(wh, table, [reused, moved]) == expected, table

    # The source's late change of 11-09 (the moved row left it) re-runs it; 11-02 re-run keeps its
    # row, and 11-16 keeps its own rows.
    for week in (WEEKS[1], WEEKS[0]):
        run_week(week, instance=instance)
    for table in ("weekly_transactions", "fact_transactions"):
        assert _weeks_of(wh, table, [reused, moved]) == expected, table
    agreed = assert_tables_agree(wh)
    source_counts = query(
        dsn,
        """SELECT count(*) FROM transactions WHERE status = 'completed'
        AND "timestamp" >= %s::date AND "timestamp" < %s::date + 7""",
        (WEEKS[0], WEEKS[0]),
    )[0][0]
    assert agreed["tx"].iloc[0] <= source_counts and len(agreed) == 3


def _materialize(week: str, instance, run_config: dict | None = None, raise_on_error: bool = False):
    return dg.materialize(
        ASSETS,
        partition_key=week,
        resources=resources_for("local"),
        instance=instance,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


class RecordingAlerts(Alerts):
    def send(self, kind, title, week=None, details=None, logger=None) -> bool:
        SENT.append({"kind": kind, "title": title, "week": week, "details": details})
        return False


SENT: list[dict] = []


def test_a_week_the_source_archived_is_not_wiped_without_an_operator(source):
    """Item 2: after ``delete from transactions`` of week 11-09, the sensor re-ran 11-09 and 11-16,
    which emptied 11-09's weekly_transactions and history while its facts and mart stayed, and
    halved 11-16's lifetime values."""
    dsn, tmp, wh = source
    instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS:
        run_week(week, instance=instance)
    before = assert_tables_agree(wh)
    query(
        dsn,
        """DELETE FROM transactions WHERE "timestamp" >= %s::date AND "timestamp" < %s::date + 7
        RETURNING 1""",
        (WEEKS[1], WEEKS[1]),
    )

    SENT.clear()
    resources = resources_for("local")
    with dg.build_sensor_context(
        instance=instance,
        resources={
            "settings": resources["settings"],
            "source_db": resources["source_db"],
            "alerts": RecordingAlerts(),
        },
    ) as ctx:
        result = source_changes(ctx)
    assert not (result.run_requests or []), [r.partition_key for r in result.run_requests]
    assert [(a["kind"], a["week"]) for a in SENT] == [("source_shrunk", WEEKS[1])]

    refused = _materialize(WEEKS[1], instance)
    assert not refused.success
    failure = next(
        e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
    )
    assert failure.step_key == "etl__raw_transactions"
    message = failure.step_failure_data.error.message
    assert "allow_shrink: true" in message and "SOURCE_SHRINK_LIMIT" in message
    after = assert_tables_agree(wh)
    pd.testing.assert_frame_equal(before, after)
    history = warehouse(
        wh, f"SELECT count(*) AS n FROM {T}.customer_history WHERE week_start = '{WEEKS[1]}'"
    )
    assert history["n"].iloc[0] > 0

    allowed = _materialize(
        WEEKS[1],
        instance,
        run_config={"ops": {"etl__raw_transactions": {"config": {"allow_shrink": True}}}},
    )
    assert allowed.success
    counts = warehouse(
        wh,
        f"""SELECT count(*) AS n FROM {T}.weekly_transactions
        WHERE "timestamp" >= '{WEEKS[1]}' AND "timestamp" < '{WEEKS[2]}'""",
    )
    assert counts["n"].iloc[0] == 0
    # an allowed re-load empties every table of the week
    emptied = assert_tables_agree(wh).set_index("week")
    assert (
        emptied.loc[pd.Timestamp(WEEKS[1]), ["tx", "facts", "orders", "passed_records"]].tolist()
        == [0] * 4
    )


def test_a_rerun_blocked_by_the_quarantine_rate_says_so_in_its_metrics_row(source, monkeypatch):
    """Item 8: the blocked re-run overwrote data_quality_metrics while weekly_transactions kept the
    first run's rows, and nothing told them apart."""
    _, _, wh = source
    instance = dg.DagsterInstance.ephemeral()
    week = WEEKS[2]
    run_week(week, instance=instance)
    first = warehouse(wh, f"SELECT transaction_id FROM {T}.weekly_transactions ORDER BY 1")
    metrics = warehouse(wh, f"SELECT * FROM {T}.data_quality_metrics WHERE week_start = '{week}'")
    assert metrics["loaded"].tolist() == [True] and metrics["load_status"].tolist() == ["loaded"]
    monkeypatch.setenv("QUALITY_FAIL_RATE", "0.0001")
    blocked = run_week(week, instance=instance, raise_on_error=False)
    assert not blocked.success
    metrics = warehouse(wh, f"SELECT * FROM {T}.data_quality_metrics WHERE week_start = '{week}'")
    assert metrics["loaded"].tolist() == [False]
    assert metrics["load_status"].tolist() == ["blocked: quarantine_rate"]
    assert metrics["run_id"].tolist() == [blocked.run_id]
    assert warehouse(wh, f"SELECT transaction_id FROM {T}.weekly_transactions ORDER BY 1").equals(
        first
    )


BOT, BOT_ROWS, BOT_AMOUNT = "BOT-0001", 5_000, 28.0


def test_one_bot_does_not_skew_everyones_anomaly_flags_nor_get_its_spend_capped(source):
    """Item 6: a customer with 5,000 transactions in the week made AMOUNT_MAD flag 2,280 ordinary
    rows (0 without it), and its profile showed a spend capped at the 99th percentile (1,448 USD,
    really 140k) and tier Bronze."""
    from customer_assets.logic.validation import ANOMALY_INPUTS, detect_week_anomalies

    dsn, tmp, wh = source
    week = WEEKS[2]
    query(
        dsn,
        "INSERT INTO customers (customer_id, created_at, country, segment) "
        "VALUES (%s, '2025-01-01', 'US', 'consumer') RETURNING 1",
        (BOT,),
    )
    query(
        dsn,
        """INSERT INTO transactions (transaction_id, customer_id, product_id, amount, currency, "timestamp",
                                            status)
        SELECT 'BOT-' || lpad(i::text, 6, '0'), %s, (SELECT min(product_id) FROM products), %s, 'USD',
               %s::timestamptz + (i * interval '100 seconds'), 'completed'
        FROM generate_series(1, %s) AS i RETURNING 1""",
        (BOT, BOT_AMOUNT, f"{week} 00:00+00", BOT_ROWS),
    )
    run_week(week, keep_intermediates_in=tmp / "kept")

    validated = pd.read_parquet(tmp / "kept" / "etl" / "validated_transactions" / f"{week}.parquet")
    bot = validated["customer_id"] == BOT
    assert bot.sum() == BOT_ROWS
    ordinary = validated.loc[~bot]
    with_bot = validated.loc[~bot, "anomaly_flags"].str.contains("AMOUNT_MAD").sum()
    alone = detect_week_anomalies(
        ordinary[ANOMALY_INPUTS], amount_usd=ordinary["amount_usd"]
    ).flags["AMOUNT_MAD"]
    # The bot weighs as one customer of the week's ~600: the ordinary rows' flags barely move.
    assert with_bot <= alone.sum() + 0.01 * len(ordinary), (with_bot, int(alone.sum()))
    assert validated.loc[bot, "anomaly_flags"].str.contains("HIGH_FREQUENCY_CUSTOMER").all()

    profile = warehouse(
        wh,
        f"""SELECT * FROM {T}.weekly_customer_profiles
        WHERE customer_id = '{BOT}' AND week_start = '{week}'""",
    ).iloc[0]
    assert profile["week_spend_usd"] == pytest.approx(BOT_ROWS * BOT_AMOUNT)
    assert (
        profile["lifetime_value"] >= BOT_ROWS * BOT_AMOUNT - 0.01
        and profile["value_tier"] == "Platinum"
    )
    assert "week_spend_usd" in profile["outlier_fields"].split(";")
