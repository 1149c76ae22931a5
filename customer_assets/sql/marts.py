"""The marts' queries in the warehouse: weekly sales, churn and retention, weekly cohort retention.

Each is computed for one week from the star schema (and the carried history and the week's
identity) by SQL that runs unchanged in DuckDB and BigQuery. Missing values are imputed here only,
never in the facts or dimensions, and each mart lists what it imputed (``IMPUTED``).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from customer_assets import tables
from customer_assets.logic.marts import cohorts
from customer_assets.logic.profile_rules import STATUS_BINS
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import MartChurnRetention, MartCohortRetention, MartWeeklySales
from customer_assets.weeks import WeekContext

UNKNOWN = "unknown"
IMPUTED = {
    tables.MART_WEEKLY_SALES: {
        "category": f"NULL -> '{UNKNOWN}'",
        "country": f"NULL -> '{UNKNOWN}'",
        "segment": f"NULL -> '{UNKNOWN}'",
    },
    tables.MART_CHURN_RETENTION: {
        "segment": f"NULL -> '{UNKNOWN}'",
        "value_tier": f"NULL -> '{UNKNOWN}'",
    },
    tables.MART_COHORT_RETENTION: {},
}
NEW_DAYS, LOYAL_DAYS = 90, 365
ACTIVE_DAYS, CHURNED_AFTER_DAYS = STATUS_BINS  # the profiles' status bins, on the last purchase

_SALES_BY_GROUP = """
  SELECT COALESCE(p.category, '{unknown}') AS category, COALESCE(c.country, '{unknown}') AS country,
         COALESCE(c.segment, '{unknown}') AS segment,
         SUM(f.amount_usd) AS revenue_usd, COUNT(*) AS orders, COUNT(DISTINCT f.customer_id) AS customers
  FROM {fact} f
    JOIN {dim_products} p ON p.product_key = f.product_key
    JOIN {dim_customers} c ON c.customer_key = f.customer_key
  WHERE f.week_start = @WEEK
  GROUP BY 1, 2, 3
"""

# Revenue, orders, customers and average order value per group, with the group's revenue a week
# before.
SALES_SQL = f"""
WITH cur AS ({_SALES_BY_GROUP.replace("@WEEK", "@week_start")}),
prev AS ({_SALES_BY_GROUP.replace("@WEEK", "@previous_week")})
SELECT cur.category, cur.country, cur.segment, cur.revenue_usd, cur.orders, cur.customers,
       cur.revenue_usd / cur.orders AS avg_order_value_usd, prev.revenue_usd AS previous_revenue_usd,
       CASE WHEN prev.revenue_usd > 0 THEN (cur.revenue_usd - prev.revenue_usd) / prev.revenue_usd * 100 END
         AS revenue_wow_change_pct
FROM cur LEFT JOIN prev ON prev.category = cur.category AND prev.country = cur.country
  AND prev.segment = cur.segment
ORDER BY cur.category, cur.country, cur.segment
"""

# Each person's first and last purchase as of the week's end (over all currencies and all their shop
# ids): everyone who ever bought, from the carried history (kept per shop id) through the week's
# identity.
_FIRST_PURCHASES = """
  SELECT COALESCE(i.customer_id, TRIM(h.customer_id)) AS customer_id, MIN(h.first_purchase_at) AS first_purchase_at,
         MAX(h.last_purchase_at) AS last_purchase_at
  FROM {history} h
    LEFT JOIN {identity} i ON i.week_start = @week_start AND i.source = 'database'
      AND i.source_customer_id = TRIM(h.customer_id)
  WHERE h.week_start = @week_start GROUP BY 1
"""
_BUYERS = "SELECT DISTINCT customer_id FROM {fact} WHERE week_start = @week_start"


def _count_if(condition: str) -> str:
    """Rows meeting ``condition`` (0, never NULL, when none does: COUNTIF gives NULL on DuckDB
    then)."""
    return f"CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS {{INT}})"


# Every customer who has bought by the week's end, with the status their last purchase gives at the
# week's end (the profiles' bins: active < 7 days, at-risk 7-30, churned > 30) and the segment and
# tier of their dimension version valid in the week.
CHURN_SQL = f"""
WITH firsts AS ({_FIRST_PURCHASES}),
buyers AS ({_BUYERS}),
customers AS (
  SELECT COALESCE(d.segment, '{{unknown}}') AS segment, COALESCE(d.value_tier, '{{unknown}}') AS value_tier,
         CASE WHEN f.first_purchase_at >= @new_since THEN 'new'
              WHEN f.first_purchase_at >= @loyal_since THEN 'established'
              ELSE 'loyal' END AS tenure_band,
         CASE WHEN f.last_purchase_at > @active_since THEN 'active'
              WHEN f.last_purchase_at >= @churned_before THEN 'at-risk'
              ELSE 'churned' END AS status,
         f.first_purchase_at, b.customer_id IS NOT NULL AS bought
  FROM firsts f
    LEFT JOIN {{dim_customers}} d ON d.customer_id = f.customer_id
      AND d.effective_from <= @week_start AND @week_start < d.effective_to
    LEFT JOIN buyers b ON b.customer_id = f.customer_id
)
SELECT segment, value_tier, tenure_band, COUNT(*) AS customers,
       {_count_if("status = 'active'")} AS active, {_count_if("status = 'at-risk'")} AS at_risk,
       {_count_if("status = 'churned'")} AS churned, {_count_if("status = 'churned'")} / COUNT(*) AS churn_rate,
       {_count_if("first_purchase_at >= @week_start_utc")} AS new_customers,
       {_count_if("bought AND first_purchase_at < @week_start_utc")} AS returning_customers
FROM customers
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

COHORT_SQL = f"""
WITH firsts AS ({_FIRST_PURCHASES}),
buyers AS ({_BUYERS})
SELECT f.first_purchase_at, b.customer_id IS NOT NULL AS bought
FROM firsts f LEFT JOIN buyers b ON b.customer_id = f.customer_id
"""


def _tables(warehouse: WarehouseSQL, schema: str, *names: str) -> dict[str, str]:
    return {
        name: warehouse.table(schema, table)
        for name, table in (
            ("fact", tables.FACT_TRANSACTIONS),
            ("dim_products", tables.DIM_PRODUCTS),
            ("dim_customers", tables.DIM_CUSTOMERS),
            ("history", tables.CUSTOMER_HISTORY),
            ("profiles", tables.WEEKLY_CUSTOMER_PROFILES),
            ("identity", tables.CUSTOMER_IDENTITY_MAP),
        )
        if name in names
    }


def _week(week: WeekContext) -> pd.Timestamp:
    return pd.Timestamp(week.week_start).tz_convert(None)


def _with_week(rows: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """The mart's rows headed by their week, as the models list the columns."""
    return rows.assign(week_start=start)[["week_start", *rows.columns]]


def weekly_sales(warehouse: WarehouseSQL, schema: str, week: WeekContext) -> pd.DataFrame:
    """The week's ``SALES_SQL`` rows, checked against their model."""
    start = _week(week)
    params = {
        "week_start": start.to_pydatetime(),
        "previous_week": (start - pd.Timedelta(days=7)).to_pydatetime(),
    }
    rows = warehouse.query(
        SALES_SQL,
        params,
        unknown=UNKNOWN,
        **_tables(warehouse, schema, "fact", "dim_products", "dim_customers"),
    )
    return MartWeeklySales.validate(_with_week(rows, start), lazy=True)


def churn_retention(warehouse: WarehouseSQL, schema: str, week: WeekContext) -> pd.DataFrame:
    """The week's ``CHURN_SQL`` rows (status and tenure as of the week's end), checked."""
    start = _week(week)
    params = {
        "week_start": start.to_pydatetime(),
        "week_start_utc": week.week_start,
        "new_since": week.week_end - timedelta(days=NEW_DAYS),
        "loyal_since": week.week_end - timedelta(days=LOYAL_DAYS),
        "active_since": week.week_end - timedelta(days=ACTIVE_DAYS),
        "churned_before": week.week_end - timedelta(days=CHURNED_AFTER_DAYS),
    }
    rows = warehouse.query(
        CHURN_SQL,
        params,
        unknown=UNKNOWN,
        **_tables(warehouse, schema, "fact", "history", "dim_customers", "identity"),
    )
    return MartChurnRetention.validate(_with_week(rows, start), lazy=True)


def cohort_retention(warehouse: WarehouseSQL, schema: str, week: WeekContext) -> pd.DataFrame:
    """Per cohort (the Monday of the first purchase), its size and how many of it bought this
    week."""
    start = _week(week)
    rows = warehouse.query(
        COHORT_SQL,
        {"week_start": start.to_pydatetime()},
        **_tables(warehouse, schema, "fact", "history", "identity"),
    )
    return MartCohortRetention.validate(cohorts(rows, start), lazy=True)
