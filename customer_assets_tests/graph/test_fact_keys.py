"""Issue 24, item 3: keys that never dangle. Backfilling a week older than the loaded ones can start
a customer's or a product's version earlier, and so change its surrogate key; applying the week's
dimension re-keys the facts of the later, already loaded weeks, so every fact key resolves without
re-running those weeks. The blocking check ``fact_keys_resolve`` scans every week's facts for a key
that no dimension row has.

The real graph on the seeded source (PostgreSQL), in DuckDB and in the BigQuery emulator."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd

from customer_assets_tests.graph.test_prod_graph import PROJECT, bq, prod_env, run_prod
from customer_assets_tests.support.pipeline import run_week, warehouse

FIRST, SECOND, THIRD = "2026-11-02", "2026-11-09", "2026-11-16"
FACT = dg.AssetKey(["customer_analytics", "fact_transactions"])

# Each fact with the keys of the versions valid at its week, and whether its keys are any dimension
# row's.
KEYS_SQL = """
SELECT f.transaction_id, f.week_start, f.customer_id, f.customer_key, f.product_key,
       c.customer_key AS valid_customer_key, p.product_key AS valid_product_key,
       f.customer_key IN (SELECT customer_key FROM {dim_customers}) AS customer_key_exists,
       f.product_key IN (SELECT product_key FROM {dim_products}) AS product_key_exists
FROM {fact} f
  LEFT JOIN {dim_customers} c ON c.customer_id = f.customer_id
    AND c.effective_from <= f.week_start AND f.week_start < c.effective_to
  LEFT JOIN {dim_products} p ON p.product_id = f.product_id
    AND p.effective_from <= f.week_start AND f.week_start < p.effective_to
ORDER BY f.transaction_id
"""


def keys_sql(table) -> str:
    return KEYS_SQL.format(
        **{name: table(name) for name in ("fact", "dim_customers", "dim_products")}
    )


def duck_keys(tmp) -> pd.DataFrame:
    names = {"fact": "fact_transactions"}
    return warehouse(
        tmp / "warehouse.duckdb",
        keys_sql(lambda name: f"customer_analytics.{names.get(name, name)}"),
    )


def bq_keys(bigquery_client) -> pd.DataFrame:
    names = {"fact": "fact_transactions"}
    return bq(
        bigquery_client,
        keys_sql(lambda name: f"`{PROJECT}.customer_analytics.{names.get(name, name)}`"),
    )


def rekeyed(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The facts loaded before the backfill, with how their keys changed."""
    both = before.merge(after, on="transaction_id", suffixes=("_before", ""), validate="one_to_one")
    return both.assign(
        customer_rekeyed=both["customer_key_before"] != both["customer_key"],
        product_rekeyed=both["product_key_before"] != both["product_key"],
    )


def assert_every_key_resolves(keys: pd.DataFrame) -> None:
    assert (
        len(keys) > 1000 and keys["customer_key_exists"].all() and keys["product_key_exists"].all()
    )
    # Each key is the key of the version valid at the fact's week, not merely a key that exists.
    assert (keys["customer_key"] == keys["valid_customer_key"]).all()
    assert (keys["product_key"] == keys["valid_product_key"]).all()


def assert_the_backfill_rekeyed_the_later_weeks(
    before: pd.DataFrame, after: pd.DataFrame
) -> pd.DataFrame:
    assert_every_key_resolves(after)
    weeks = set(pd.to_datetime(after["week_start"]).dt.strftime("%Y-%m-%d"))
    assert weeks == {FIRST, SECOND, THIRD}
    changed = rekeyed(before, after)
    # The catalogue of the backfilled week is the later weeks' (extracted the same day): every
    # product's first version now starts on FIRST. Customers who look the same in the first two
    # weeks start earlier too.
    assert changed["product_rekeyed"].any() and changed["customer_rekeyed"].any()
    assert changed.loc[changed["product_rekeyed"], "product_key"].str.endswith("|20261102").all()
    assert changed.loc[changed["customer_rekeyed"], "customer_key"].str.endswith("|20261102").all()
    # Before the backfill, those facts held keys that the dimension no longer has.
    assert not set(changed.loc[changed["product_rekeyed"], "product_key_before"]) & set(
        after["product_key"]
    )
    return changed


def materialized(result: dg.ExecuteInProcessResult, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def fact_keys_check(result: dg.ExecuteInProcessResult):
    return next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "fact_keys_resolve"
    )


def test_a_backfilled_older_week_rekeys_the_later_weeks_facts_in_duckdb(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    for week in (SECOND, THIRD):
        result = run_week(week)
        # the newest week
        assert materialized(result, "customer_analytics__dim_products")["facts_rekeyed"] == 0
        assert fact_keys_check(result).passed
    before = duck_keys(tmp)
    assert_every_key_resolves(before)

    backfill = run_week(FIRST)  # weeks 2 and 3 are not re-run
    after = duck_keys(tmp)
    changed = assert_the_backfill_rekeyed_the_later_weeks(before, after)
    assert (
        materialized(backfill, "customer_analytics__dim_products")["facts_rekeyed"]
        == changed["product_rekeyed"].sum()
    )
    check = fact_keys_check(backfill)
    assert check.passed and check.metadata["facts_scanned"].value == len(after)
    assert (
        check.metadata["dangling_customer_keys"].value
        == check.metadata["dangling_product_keys"].value
        == 0
    )

    # Idempotent: the week again re-keys nothing, and the keys stay.
    again = run_week(FIRST)
    assert materialized(again, "customer_analytics__dim_products")["facts_rekeyed"] == 0
    pd.testing.assert_frame_equal(duck_keys(tmp), after)


def test_a_backfilled_older_week_rekeys_the_later_weeks_facts_in_bigquery(
    prod_env, bigquery_client
):
    for week in (SECOND, THIRD):
        assert run_prod(week).success
    before = bq_keys(bigquery_client)
    assert_every_key_resolves(before)

    backfill = run_prod(FIRST)
    after = bq_keys(bigquery_client)
    changed = assert_the_backfill_rekeyed_the_later_weeks(before, after)
    assert (
        materialized(backfill, "customer_analytics__dim_products")["facts_rekeyed"]
        == changed["product_rekeyed"].sum()
    )
    assert fact_keys_check(backfill).passed


def test_a_key_broken_by_hand_fails_fact_keys_resolve_and_the_marts_wait(
    pipeline_env, small_source
):
    tmp = pipeline_env("small_source")
    instance = dg.DagsterInstance.ephemeral()
    run_week(SECOND, instance=instance)
    run_week(THIRD, instance=instance)
    db = tmp / "warehouse.duckdb"
    with duckdb.connect(str(db)) as con:  # a fact of the earlier week loses its customer's key
        con.execute("""UPDATE customer_analytics.fact_transactions SET customer_key = 'garbage|1'
                       WHERE transaction_id = (SELECT min(transaction_id) FROM customer_analytics.fact_transactions
                                               WHERE week_start = '2026-11-09')""")
    sales_before = warehouse(db, "SELECT * FROM customer_analytics.mart_weekly_sales ORDER BY ALL")
    result = run_week(
        THIRD,
        selection=dg.AssetSelection.assets(FACT).downstream().required_multi_asset_neighbors(),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks[
        "referential_integrity"
    ].passed  # the week's own facts resolve: the earlier week's do not
    broken = checks["fact_keys_resolve"]
    assert not broken.passed and broken.severity == dg.AssetCheckSeverity.ERROR
    assert broken.metadata["dangling_customer_keys"].value == 1
    assert broken.metadata["facts_with_dangling_customer_key"].value == 1
    assert broken.metadata["dangling_product_keys"].value == 0
    assert "'garbage|1'" in broken.metadata["result"].value
    assert not [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1].startswith("mart_")
    ]
    pd.testing.assert_frame_equal(
        warehouse(db, "SELECT * FROM customer_analytics.mart_weekly_sales ORDER BY ALL"),
        sales_before,
    )
