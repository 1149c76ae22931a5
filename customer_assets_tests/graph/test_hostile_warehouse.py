"""Issue 21 against a real PostgreSQL: what the warehouse holds after a hostile source (imputation
kept to the marts, ...)."""

from __future__ import annotations

from customer_assets_tests.support.pipeline import run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_source, query

WEEK = "2026-11-16"


def test_a_missing_country_or_segment_stays_missing_in_the_dimension_and_the_mart_imputes_it(
    pipeline_env, pg_server
):
    """Item 9: `dim_customers` stored 'unknown' for a missing country or segment, although
    imputation happens in the marts only."""
    dsn = create_source(pg_server, "nameless_source", SMALL)
    tmp = pipeline_env("nameless_source", events=False)
    [(customer,)] = query(
        dsn,
        """UPDATE customers SET country = NULL, segment = NULL WHERE customer_id = (
        SELECT customer_id FROM transactions WHERE status = 'completed' AND "timestamp" >= %s::date
          AND "timestamp" < %s::date + 7 AND customer_id IN (SELECT customer_id FROM customers)
        ORDER BY transaction_id LIMIT 1) RETURNING customer_id""",
        (WEEK, WEEK),
    )
    assert run_week(WEEK).success
    db = tmp / "warehouse.duckdb"
    dim = warehouse(
        db,
        f"SELECT country, segment FROM customer_analytics.dim_customers WHERE customer_id = '{customer}'",
    )
    assert len(dim) == 1 and dim["country"].isna().all() and dim["segment"].isna().all()
    assert not warehouse(
        db,
        "SELECT count(*) AS n FROM customer_analytics.dim_customers "
        "WHERE 'unknown' IN (country, segment)",
    )["n"].iloc[0]
    mart = warehouse(
        db, "SELECT * FROM customer_analytics.mart_weekly_sales WHERE country = 'unknown'"
    )
    assert len(mart) >= 1 and (mart["segment"] == "unknown").all() and mart["orders"].sum() >= 1
