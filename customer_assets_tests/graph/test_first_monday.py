"""Issue 23, item 1: the pipeline started on the latest week of a source with history. Lifetime figures come from
the source's whole history (the opening balance), and equal what loading every week in order gives."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from customer_assets_tests.support.pipeline import run_week, warehouse

WEEKS = ["2026-11-02", "2026-11-09", "2026-11-16"]
WEEK = WEEKS[-1]
HISTORY = f"SELECT * EXCLUDE (week_start) FROM customer_analytics.customer_history WHERE week_start = TIMESTAMP '{WEEK}' "


def _history(db) -> pd.DataFrame:
    return warehouse(db, HISTORY + "ORDER BY customer_id, currency").reset_index(drop=True)


def test_the_first_week_counts_the_sources_whole_history(pipeline_env, small_source, tmp_path):
    first = pipeline_env("small_source", events=False)
    result = run_week(WEEK)  # the first week on a fresh warehouse: no earlier partition, nothing loaded before
    meta = result.asset_materializations_for_node("customer_analytics__customer_history")[0].metadata
    assert meta["opening_balance_transactions"].value > 1500 and meta["opening_balance_customers"].value > 300
    opened = _history(first / "warehouse.duckdb")

    every = tmp_path / "every_week"
    every.mkdir()
    pipeline_env("small_source", events=False)
    import os

    os.environ["WAREHOUSE_DUCKDB_PATH"] = str(every / "warehouse.duckdb")  # restored by monkeypatch's teardown
    instance = dg.DagsterInstance.ephemeral()
    for week in WEEKS:
        assert run_week(week, instance=instance).success
    carried = _history(every / "warehouse.duckdb")
    # The opening balance (SQL on the source) and validation week by week (Python) agree, customer by customer.
    pd.testing.assert_frame_equal(opened.drop(columns="last_purchase_before_week"),
                                  carried.drop(columns="last_purchase_before_week"))

    rows = warehouse(first / "warehouse.duckdb", """SELECT customer_id, customer_transaction_count, customer_lifecycle,
        days_since_first_purchase FROM customer_analytics.weekly_transactions""")
    # Each row's lifetime count is the customer's whole history, not the week's (the seed's three weeks are all
    # under the 30 days that make a customer "new", so the lifecycle cannot show it here: the first purchase does).
    lifetime = opened.groupby("customer_id")["transaction_count"].sum()
    counted = rows.groupby("customer_id")["customer_transaction_count"].max()
    assert (counted == lifetime.reindex(counted.index)).all()
    week_only = rows.groupby("customer_id")["customer_id"].transform("size")
    assert (rows["customer_transaction_count"] > week_only).sum() > 100
    assert (rows["days_since_first_purchase"] >= 7).sum() > 100
