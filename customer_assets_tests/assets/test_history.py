"""Customer history carried forward, and late changes to loaded weeks caught and repaired (real
PostgreSQL)."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from customer_assets.deployments import resources_for
from customer_assets.late_changes import source_changes_sensor
from customer_assets.logic import history
from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_source, query

WEEKS = ["2026-11-02", "2026-11-09", "2026-11-16"]
# The sensor, evaluated directly (its default status is build_definitions' to decide).
source_changes = source_changes_sensor(dg.DefaultSensorStatus.RUNNING)
HISTORY_KEYS = ["week_start", "customer_id", "currency"]


def test_carrying_week_by_week_equals_summing_everything_at_once():
    rng = np.random.default_rng(7)
    weeks = []
    for _i, start in enumerate(pd.date_range("2026-10-05", periods=6, freq="7D", tz="UTC")):
        n = 400
        weeks.append(
            (
                start,
                pd.DataFrame(
                    {
                        "customer_id": rng.choice([f"C{j}" for j in range(60)], n),
                        "currency": rng.choice(["USD", "EUR", "JPY", "KWD"], n),
                        # three decimals: KWD's minor units
                        "amount": np.round(rng.lognormal(3, 1.5, n), 3),
                        "timestamp": start
                        + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s"),
                    }
                ),
            )
        )
    carried = history.empty_totals()
    for start, rows in weeks:
        carried = history.carry(carried, history.week_totals(rows), start)
    everything = pd.concat([rows for _, rows in weeks])
    at_once = history.carry(history.empty_totals(), history.week_totals(everything), weeks[-1][0])
    columns = [
        "customer_id",
        "currency",
        "amount_milli",
        "transaction_count",
        "first_purchase_at",
        "last_purchase_at",
    ]
    pd.testing.assert_frame_equal(carried[columns], at_once[columns])
    # Exact: thousandths add up as integers, whatever the grouping.
    expected = (
        np.round(everything["amount"] * 1000)
        .astype("int64")
        .groupby([everything["customer_id"], everything["currency"]])
        .sum()
    )
    assert (
        carried.set_index(["customer_id", "currency"])["amount_milli"]
        .sort_index()
        .equals(expected.sort_index().rename("amount_milli"))
    )
    # The last purchase before the last week is the previous week's last purchase.
    before = (
        everything[everything["timestamp"] < weeks[-1][0]]
        .groupby(["customer_id", "currency"])["timestamp"]
        .max()
    )
    got = (
        carried.set_index(["customer_id", "currency"])["last_purchase_before_week"]
        .dropna()
        .sort_index()
    )
    assert got.equals(before.sort_index().rename("last_purchase_before_week").astype(got.dtype))


def test_customer_totals_convert_each_currency_at_the_closing_rate():
    rows = pd.DataFrame(
        {
            "customer_id": ["A", "A", "B"],
            "currency": ["USD", "EUR", "USD"],
            "amount": [10.0, 20.0, 5.5],
            "timestamp": pd.to_datetime(
                ["2026-11-16 10:00", "2026-11-17 10:00", "2026-11-18 10:00"], utc=True
            ),
        }
    )
    carried = history.carry(
        history.empty_totals(), history.week_totals(rows), pd.Timestamp("2026-11-16", tz="UTC")
    )
    week_end = pd.Timestamp("2026-11-23", tz="UTC").to_pydatetime()
    totals = history.customer_totals(carried, week_end, pd.Series(["A"])).set_index("customer_id")
    from customer_assets.logic.currency import daily_rate_table

    rate = (
        daily_rate_table(
            week_end.date() - pd.Timedelta(days=1), week_end.date() - pd.Timedelta(days=1), ["EUR"]
        )
        .set_index("currency")
        .loc["EUR", "usd_per_unit"]
    )
    assert list(totals.index) == ["A"] and totals.loc["A", "transaction_count"] == 2
    assert totals.loc["A", "lifetime_value_usd"] == pytest.approx(10.0 + 20.0 * rate)


def evaluate_sensor(
    instance: dg.DagsterInstance, cursor: str | None = None
) -> tuple[dg.SensorResult, str]:
    resources = resources_for("local")
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "settings": resources["settings"],
            "source_db": resources["source_db"],
            "alerts": resources["alerts"],
        },
    )
    return source_changes(context), context.cursor


def repair(instance: dg.DagsterInstance) -> list[list[str]]:
    """What the daemon would do: evaluate the sensor, run what it asks in order, until it asks
    nothing."""
    rounds, cursor = [], None
    for _ in range(5):
        result, cursor = evaluate_sensor(instance, cursor)
        weeks = [r.partition_key for r in result.run_requests or []]
        if not weeks:
            return rounds
        rounds.append(weeks)
        for week in weeks:
            run_week(week, instance=instance)
    raise AssertionError(f"the sensor kept asking for runs: {rounds}")


def full_recompute(path) -> pd.DataFrame:
    """Per week, customer and currency: the totals of every loaded row up to that week, from
    scratch."""
    rows = warehouse(
        path,
        'SELECT customer_id, currency, amount, "timestamp", week_start '
        "FROM customer_analytics.weekly_transactions",
    )
    out = []
    for week in sorted(rows["week_start"].unique()):
        upto = rows[rows["week_start"] <= week]
        totals = (
            upto.assign(amount_milli=np.round(upto["amount"] * 1000).astype("int64"))
            .groupby(["customer_id", "currency"])
            .agg(
                amount_milli=("amount_milli", "sum"),
                transaction_count=("amount_milli", "size"),
                first_purchase_at=("timestamp", "min"),
                last_purchase_at=("timestamp", "max"),
            )
            .reset_index()
        )
        out.append(totals.assign(week_start=week))
    return pd.concat(out).sort_values(HISTORY_KEYS).reset_index(drop=True)


def carried(path) -> pd.DataFrame:
    history = warehouse(
        path,
        "SELECT week_start, customer_id, currency, amount_milli, transaction_count, "
        "first_purchase_at, last_purchase_at FROM customer_analytics.customer_history",
    )
    return history.sort_values(HISTORY_KEYS).reset_index(drop=True)


def test_carried_history_equals_a_full_recompute_whatever_the_order(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    instance = dg.DagsterInstance.ephemeral()
    for week in (WEEKS[2], WEEKS[0], WEEKS[1]):  # a backfill out of order
        run_week(week, instance=instance)
    stale = carried(tmp / "warehouse.duckdb")
    # Week 3 was built before week 2 existed: the sensor sees its history stale and re-runs it.
    assert repair(instance) == [[WEEKS[2]]]
    history = carried(tmp / "warehouse.duckdb")
    expected = full_recompute(tmp / "warehouse.duckdb")
    pd.testing.assert_frame_equal(history[expected.columns], expected, check_dtype=False)
    # Week 3 built first already counted weeks 1 and 2 from the source (the opening balance, issue
    # 23): the repair confirms it rather than correcting it.
    pd.testing.assert_frame_equal(history, stale)
    # The carried weeks read the week before; the first week of the backfill rescanned.
    modes = {}
    for week in WEEKS:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(["customer_analytics", "customer_history"]),
                asset_partitions=[week],
            ),
            limit=1,
        )
        modes[week] = record.records[0].asset_materialization.metadata["mode"].value
    assert modes == {WEEKS[0]: "full_rescan", WEEKS[1]: "carried", WEEKS[2]: "carried"}
    # Lifetime figures of the transform come from the carried totals: a customer of the last week
    # has every validated transaction of the three weeks in its count, and nothing quarantined.
    last = warehouse(
        tmp / "warehouse.duckdb",
        "SELECT customer_id, max(customer_transaction_count) AS n "
        "FROM customer_analytics.weekly_transactions WHERE week_start = '2026-11-16' GROUP BY 1",
    )
    counts = (
        expected[expected["week_start"] == pd.Timestamp(WEEKS[2])]
        .groupby("customer_id")["transaction_count"]
        .sum()
    )
    assert (last.set_index("customer_id")["n"] == counts.reindex(last["customer_id"]).values).all()


@pytest.fixture
def late_source(pg_server):
    return create_source(pg_server, "late_source", SMALL)


VOLATILE = {
    "run_timestamp",
    "computed_at",
    "run_id",
}  # when and by which run a row was written, not what it says


def snapshot(path) -> dict[str, pd.DataFrame]:
    tables = {}
    for table, order in (
        ("weekly_transactions", "transaction_id"),
        ("customer_history", "week_start, customer_id, currency"),
        ("weekly_customer_profiles", "week_start, customer_id"),
        ("dim_customers", "customer_id, version"),
        ("data_quality_metrics", "week_start"),
    ):
        frame = warehouse(path, f"SELECT * FROM customer_analytics.{table} ORDER BY {order}")
        tables[table] = frame.drop(
            columns=[c for c in frame.columns if c in VOLATILE or "seconds" in c]
        )
    return tables


def test_a_late_change_to_a_loaded_week_is_detected_and_repaired(
    pipeline_env, late_source, monkeypatch, tmp_path
):
    tmp = pipeline_env("late_source")
    instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS:
        run_week(week, instance=instance)
    assert repair(instance) == []  # loaded as the source is: nothing to do

    # In the middle week: an edited amount, a refund, and a row inserted late.
    clean = [
        r[0]
        for r in query(
            late_source,
            """
        SELECT transaction_id FROM transactions t WHERE status = 'completed' AND "timestamp" >= '2026-11-09'
          AND "timestamp" < '2026-11-16' AND currency = 'USD' AND amount > 0 AND customer_id IS NOT NULL
          AND transaction_id NOT IN (SELECT transaction_id FROM demo_seed_dirty_rows WHERE transaction_id IS NOT NULL)
        ORDER BY transaction_id LIMIT 3""",
        )
    ]
    query(
        late_source,
        "UPDATE transactions SET amount = amount + 10 WHERE transaction_id = %s RETURNING 1",
        (clean[0],),
    )
    query(
        late_source,
        "UPDATE transactions SET status = 'refunded' WHERE transaction_id = %s RETURNING 1",
        (clean[1],),
    )
    query(
        late_source,
        """INSERT INTO transactions SELECT 'LATE-0001', customer_id, product_id, amount, currency,
                          "timestamp" + interval '1 minute', status FROM transactions WHERE transaction_id = %s
                          RETURNING 1""",
        (clean[2],),
    )

    assert repair(instance) == [WEEKS[1:]]  # the changed week, then the week after it
    repaired = snapshot(tmp / "warehouse.duckdb")
    loaded = repaired["weekly_transactions"].set_index("transaction_id")
    assert "LATE-0001" in loaded.index and clean[1] not in loaded.index
    source_amount = query(
        late_source,
        "SELECT amount::float8 FROM transactions WHERE transaction_id = %s",
        (clean[0],),
    )
    assert loaded.loc[clean[0], "amount"] == pytest.approx(source_amount[0][0])

    # A from-scratch rebuild of the changed source gives the same warehouse.
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(tmp_path / "rebuilt.duckdb"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "rebuilt"))
    rebuilt_instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS:
        run_week(week, instance=rebuilt_instance)
    rebuilt = snapshot(tmp_path / "rebuilt.duckdb")
    for table, frame in rebuilt.items():
        pd.testing.assert_frame_equal(repaired[table], frame, obj=table)


@pytest.fixture
def poisoned_source(pg_server):
    return create_source(pg_server, "poisoned_source", SMALL)


def test_nan_infinite_and_quarantined_rows_never_reach_lifetime_figures(
    pipeline_env, poisoned_source
):
    """Issue 12, finding 2: one NaN amount made a customer's lifetime value 1e12 and their count 5
    instead of 12, and rows that validation quarantines (duplicates, unknown products) counted in
    the history query."""
    tmp = pipeline_env("poisoned_source")
    # A float amount column, as many schemas have: it holds Infinity (numeric(18,4) does not).
    query(
        poisoned_source,
        "ALTER TABLE transactions ALTER COLUMN amount TYPE double precision; SELECT 1",
    )
    customer = query(
        poisoned_source,
        """SELECT customer_id FROM transactions WHERE status = 'completed'
        AND "timestamp" >= '2026-11-16' AND "timestamp" < '2026-11-23' AND customer_id IS NOT NULL
        AND currency = 'USD' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    )[0][0]
    template = query(
        poisoned_source,
        """SELECT transaction_id FROM transactions WHERE customer_id = %s
        AND status = 'completed' AND "timestamp" >= '2026-11-16' AND currency = 'USD' ORDER BY 1 LIMIT 1""",
        (customer,),
    )[0][0]
    for new_id, amount, product in (
        ("POISON-NAN", "'NaN'", "product_id"),
        ("POISON-INF", "'Infinity'", "product_id"),
        ("POISON-UNKNOWN-PRODUCT", "amount", "'NO-SUCH-PRODUCT'"),
    ):
        query(
            poisoned_source,
            f"""INSERT INTO transactions SELECT '{new_id}', customer_id, {product}, {amount}, currency,
            "timestamp" + interval '1 second', status FROM transactions WHERE transaction_id = %s RETURNING 1""",
            (template,),
        )
    run_week(WEEKS[2])
    reasons = json.loads((tmp / "data" / "reports" / WEEKS[2] / "quality_report.json").read_text())[
        "quarantine_reasons"
    ]
    assert (
        reasons["NON_FINITE_AMOUNT"] >= 1
        and reasons["MISSING_AMOUNT"] >= 1
        and reasons["UNKNOWN_PRODUCT"] >= 1
    )
    loaded = warehouse(
        tmp / "warehouse.duckdb",
        f"""SELECT transaction_id, amount, customer_lifetime_value,
        customer_transaction_count FROM customer_analytics.weekly_transactions WHERE customer_id = '{customer}'""",
    )
    assert not loaded["transaction_id"].str.startswith("POISON").any()
    assert np.isfinite(loaded["customer_lifetime_value"]).all()
    history = warehouse(
        tmp / "warehouse.duckdb",
        f"""SELECT sum(transaction_count) AS n FROM
        customer_analytics.customer_history WHERE customer_id = '{customer}'""",
    )
    # The first week: its own valid rows plus the opening balance of the weeks before (issue 23),
    # never a poisoned row (they are all in this week).
    assert (loaded["customer_transaction_count"] == history["n"][0]).all()
    import psycopg2

    from customer_assets.logic.history import balance_rules
    from customer_assets.sources.opening_balance import opening_balance
    from customer_assets.sources.source_schema import read_source_schema

    with psycopg2.connect(poisoned_source, options="-c TimeZone=UTC") as conn:
        before = opening_balance(
            conn,
            read_source_schema(conn),
            pd.Timestamp(WEEKS[2], tz="UTC").to_pydatetime(),
            balance_rules(pd.Timestamp(WEEKS[2]).date(), 1e6),
        ).to_pandas()
    conn.close()
    assert (
        history["n"][0]
        == len(loaded) + before.loc[before["customer_id"] == customer, "transaction_count"].sum()
    )
