"""Issue 15: the star schema and the marts, filled by the weekly graph against a real PostgreSQL
(DuckDB warehouse)."""

import dagster as dg
import duckdb
import pandas as pd

from customer_assets.weeks import week_bounds
from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import query

WEEK, EARLIER = "2026-11-16", "2026-11-09"
STAR = [
    "fact_transactions",
    "fact_transactions_quarantine",
    "dim_products",
    "dim_date",
    "product_snapshots",
    "mart_weekly_sales",
    "mart_churn_retention",
    "mart_cohort_retention",
    "pipeline_error_log",
]


def _table(tmp, name: str) -> pd.DataFrame:
    frame = warehouse(tmp / "warehouse.duckdb", f"SELECT * FROM customer_analytics.{name}")
    return frame.sort_values(list(frame.columns)[:4], ignore_index=True)


def test_a_week_fills_the_star_schema_and_marts_and_a_rerun_changes_nothing(
    pipeline_env, small_source
):
    tmp = pipeline_env("small_source")
    run_week(EARLIER)
    run_week(WEEK)
    db = tmp / "warehouse.duckdb"
    facts = warehouse(db, "SELECT * FROM customer_analytics.fact_transactions")
    loaded = warehouse(
        db, "SELECT transaction_id, week_start FROM customer_analytics.weekly_transactions"
    )
    # Every loaded transaction is a fact of its week, once; no orphan in the demo data.
    assert sorted(facts["transaction_id"]) == sorted(loaded["transaction_id"])
    assert (
        warehouse(db, "SELECT count(*) AS n FROM customer_analytics.fact_transactions_quarantine")[
            "n"
        ][0]
        == 0
    )
    # Each key resolves to one dimension row, the one valid at the transaction's week.
    resolved = warehouse(
        db,
        """
        SELECT count(*) AS n FROM customer_analytics.fact_transactions f
        JOIN customer_analytics.dim_customers c ON c.customer_key = f.customer_key
          AND c.effective_from <= f.week_start AND f.week_start < c.effective_to
        JOIN customer_analytics.dim_products p ON p.product_key = f.product_key
          AND p.effective_from <= f.week_start AND f.week_start < p.effective_to
        JOIN customer_analytics.dim_date d ON d.date_key = f.date_key
          AND d.date = CAST(date_trunc('day', f."timestamp") AS TIMESTAMP)""",
    )["n"][0]
    assert resolved == len(facts)
    days = warehouse(
        db, "SELECT date_key, day_name, iso_week FROM customer_analytics.dim_date ORDER BY date_key"
    )
    assert days["date_key"].tolist()[:2] == [20261109, 20261110] and len(days) == 14
    assert days.iloc[7].tolist() == [20261116, "Monday", 47]

    # Sales: the week's revenue by group adds up to the facts'; the change against the week before
    # is computed.
    sales = warehouse(
        db, "SELECT * FROM customer_analytics.mart_weekly_sales WHERE week_start = '2026-11-16'"
    )
    week_facts = facts[facts["week_start"] == pd.Timestamp(WEEK)]
    assert round(sales["revenue_usd"].sum(), 4) == round(week_facts["amount_usd"].sum(), 4)
    assert sales["orders"].sum() == len(week_facts)
    assert (
        sales["avg_order_value_usd"] * sales["orders"] - sales["revenue_usd"]
    ).abs().max() < 1e-6
    both = sales.dropna(subset=["previous_revenue_usd"])
    assert len(both) > 0
    expected = (
        (both["revenue_usd"] - both["previous_revenue_usd"]) / both["previous_revenue_usd"] * 100
    )
    assert (both["revenue_wow_change_pct"] - expected).abs().max() < 1e-9

    # Churn: every customer who has bought by the week's end, once, by the status of their last
    # purchase.
    churn = warehouse(
        db, "SELECT * FROM customer_analytics.mart_churn_retention WHERE week_start = '2026-11-16'"
    )
    last = warehouse(
        db,
        """SELECT upper(trim(customer_id)) AS id, max(last_purchase_at) AS last_at
                            FROM customer_analytics.customer_history WHERE week_start = '2026-11-16' GROUP BY 1""",
    )
    days = (pd.Timestamp("2026-11-23", tz="UTC") - last["last_at"]) / pd.Timedelta(days=1)
    assert churn["customers"].sum() == len(last)
    assert (churn["active"].sum(), churn["at_risk"].sum(), churn["churned"].sum()) == (
        (days < 7).sum(),
        ((days >= 7) & (days <= 30)).sum(),
        (days > 30).sum(),
    )
    # customers of the week before who did not come back (7-14 days)
    assert churn["at_risk"].sum() > 0
    assert set(churn["tenure_band"]) <= {"new", "established", "loyal"}
    buyers = week_facts["customer_id"].nunique()
    assert churn["new_customers"].sum() + churn["returning_customers"].sum() == buyers

    # Cohorts: this week's buyers, by the week of their first purchase.
    cohorts = warehouse(
        db, "SELECT * FROM customer_analytics.mart_cohort_retention WHERE week_start = '2026-11-16'"
    )
    assert cohorts["retained"].sum() == buyers
    assert (cohorts["retention_rate"] == cohorts["retained"] / cohorts["cohort_size"]).all()

    # The error log: the week's quarantined rows by reason, as the quality metrics count them.
    errors = warehouse(
        db,
        """SELECT * FROM customer_analytics.pipeline_error_log WHERE week_start = '2026-11-16'""",
    )
    rejected = errors[
        (errors["step"] == "etl/quarantined_transactions") & (errors["severity"] == "ERROR")
    ]
    metrics = warehouse(
        db,
        """SELECT quarantined_records FROM customer_analytics.data_quality_metrics
                               WHERE week_start = '2026-11-16'""",
    )
    assert (
        len(rejected) >= 3 and rejected["record_count"].sum() == metrics["quarantined_records"][0]
    )
    assert (errors["record_count"] > 0).all() and set(errors["severity"]) <= {"ERROR", "WARNING"}

    before = {name: _table(tmp, name) for name in STAR}
    run_week(WEEK)
    for name in STAR:
        pd.testing.assert_frame_equal(_table(tmp, name), before[name], obj=name)
    # Two weeks stay apart: the earlier week's rows are untouched by re-running the later one.
    assert set(_table(tmp, "mart_weekly_sales")["week_start"]) == {
        pd.Timestamp(EARLIER),
        pd.Timestamp(WEEK),
    }


def test_an_orphan_key_is_quarantined_with_its_reason_and_stops_the_marts(
    pipeline_env, small_source
):
    tmp = pipeline_env("small_source")
    instance = dg.DagsterInstance.ephemeral()
    run_week(WEEK, instance=instance)
    db = tmp / "warehouse.duckdb"
    product = warehouse(
        db,
        "SELECT product_id, count(*) AS n FROM customer_analytics.fact_transactions "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
    )
    orphan, rows = product["product_id"][0], int(product["n"][0])
    with duckdb.connect(str(db)) as con:  # the product's versions vanish from the dimension
        con.execute("DELETE FROM customer_analytics.dim_products WHERE product_id = ?", [orphan])
    sales_before = _table(tmp, "mart_weekly_sales")
    fact = dg.AssetKey(["customer_analytics", "fact_transactions"])
    result = run_week(
        WEEK,
        selection=dg.AssetSelection.assets(fact).downstream().required_multi_asset_neighbors(),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "referential_integrity"
    )
    assert not check.passed and "NO_PRODUCT_VERSION" in check.metadata["result"].value
    quarantined = warehouse(db, "SELECT * FROM customer_analytics.fact_transactions_quarantine")
    assert len(quarantined) == rows and set(quarantined["product_id"]) == {orphan}
    assert set(quarantined["reason_codes"]) == {"NO_PRODUCT_VERSION"}
    facts = warehouse(db, "SELECT product_id FROM customer_analytics.fact_transactions")
    assert orphan not in set(facts["product_id"])
    # Nothing is lost: the loaded week is the facts plus the quarantined rows; the marts waited.
    loaded = warehouse(db, "SELECT count(*) AS n FROM customer_analytics.weekly_transactions")["n"][
        0
    ]
    assert len(facts) + len(quarantined) == loaded
    assert not [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1].startswith("mart_")
    ]
    pd.testing.assert_frame_equal(_table(tmp, "mart_weekly_sales"), sales_before)


def test_a_customer_in_crm_and_erp_under_other_ids_is_one_customer_with_both_ids_mapped(
    pipeline_env, small_source
):
    """Issue 15: identity resolution on the keyed email hash across the CRM (API), the ERP (its own
    database connection) and the transaction database."""
    tmp = pipeline_env("small_source", crm=True, erp=True)
    start, end = week_bounds(WEEK)
    pairs = query(
        small_source,
        """
        SELECT DISTINCT e.erp_id, c.customer_id FROM erp.customers e
        JOIN customers c ON lower(c.email) = lower(e.email)
        JOIN crm_customers k ON upper(trim(k.customer_id)) = c.customer_id
        WHERE e.modified_at >= %(start)s AND e.modified_at < %(end)s
          AND k.updated_at >= %(start)s AND k.updated_at < %(end)s
        ORDER BY 2 LIMIT 5""",
        {"start": start, "end": end},
    )
    assert pairs, "the demo seed gives ERP records of CRM customers under other ids"
    run_week(WEEK)
    mapping = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.customer_identity_map"
    )
    for erp_id, crm_id in pairs:
        # the CRM's ids are kept as it spells them (the seed pads and lower-cases some); linked
        # without case
        records = mapping[mapping["source_customer_id"].str.upper().isin([erp_id.upper(), crm_id])]
        assert {
            (s, i.upper())
            for s, i in zip(records["source"], records["source_customer_id"], strict=False)
        } >= {("crm", crm_id), ("erp", erp_id.upper())}
        assert set(records["customer_id"]) == {crm_id}, records  # the CRM's id wins over the ERP's
        erp_row = records[records["source"] == "erp"].iloc[0]
        assert erp_row["matched_on"] == "email" and not erp_row["is_primary"]
    # Every record of the week is mapped once, and each customer has exactly one primary record.
    assert not mapping.duplicated(["source", "source_customer_id"]).any()
    assert mapping.groupby("customer_id")["is_primary"].sum().eq(1).all()
    # nothing personal in clear text: contact details only as keyed HMAC-SHA256, what later weeks
    # match on
    for column in ("email_hash", "phone_hash"):
        assert (
            mapping[column].dropna().str.fullmatch(r"[0-9a-f]{64}").all()
            and mapping[column].notna().any()
        )
    assert not [c for c in mapping.columns if c in ("email", "phone", "address")]
