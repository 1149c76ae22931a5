"""Marts analysts query directly, replaced with their week: sales, churn and retention, cohort
retention. Each KPI is numeric metadata of its week (plotted in the UI), and a check warns when it
leaves its trailing band."""

import dagster as dg

from customer_assets import tables
from customer_assets.assets.common import OWNERS, PARTITIONS, WAREHOUSE, week_context
from customer_assets.assets.star import FACT
from customer_assets.dagster_types import (
    MartChurnRetentionType,
    MartCohortRetentionType,
    MartWeeklySalesType,
)
from customer_assets.lineage import lineage_metadata, lineage_schema
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.sql.marts import IMPUTED, churn_retention, cohort_retention, weekly_sales

GROUP = "marts"
SALES = tables.key(tables.MART_WEEKLY_SALES)
CHURN = tables.key(tables.MART_CHURN_RETENTION)


def _mart(name: str, dagster_type, deps: list) -> dict:
    return {
        "key_prefix": [WAREHOUSE],
        "partitions_def": PARTITIONS,
        "group_name": GROUP,
        "owners": OWNERS,
        "kinds": {"sql"},
        "io_manager_key": "warehouse_io_manager",
        "dagster_type": dagster_type,
        "deps": deps,
        "metadata": {
            "partition_expr": "week_start",
            "dagster/column_schema": lineage_schema(name),
            "imputed": dg.MetadataValue.json(IMPUTED[name]),
        },
    }


@dg.asset(
    **_mart(
        tables.MART_WEEKLY_SALES,
        MartWeeklySalesType,
        [FACT, tables.key(tables.DIM_PRODUCTS), tables.key(tables.DIM_CUSTOMERS)],
    )
)
def mart_weekly_sales(context: dg.AssetExecutionContext, warehouse: WarehouseSQL) -> dg.Output:
    """`customer_analytics.mart_weekly_sales`: per week, product category, customer country and
    segment: revenue (USD), orders, customers, average order value and the change in revenue against
    the week before."""
    sales = weekly_sales(warehouse, WAREHOUSE, week_context(context))
    revenue, orders = float(sales["revenue_usd"].sum()), int(sales["orders"].sum())
    return dg.Output(
        sales,
        metadata={
            "dagster/row_count": len(sales),
            "revenue_usd": round(revenue, 2),
            "orders": orders,
            "avg_order_value_usd": round(revenue / orders, 2) if orders else 0.0,
            **lineage_metadata(tables.MART_WEEKLY_SALES),
        },
    )


@dg.asset(
    **_mart(
        tables.MART_CHURN_RETENTION,
        MartChurnRetentionType,
        [
            FACT,
            tables.key(tables.CUSTOMER_HISTORY),
            tables.key(tables.DIM_CUSTOMERS),
            tables.key(tables.CUSTOMER_IDENTITY_MAP),
            tables.key(tables.WEEKLY_CUSTOMER_PROFILES),
        ],
    )
)
def mart_churn_retention(context: dg.AssetExecutionContext, warehouse: WarehouseSQL) -> dg.Output:
    """`customer_analytics.mart_churn_retention`: per week, segment, value tier and tenure band:
    customers, active / at-risk / churned, churn rate, new and returning customers."""
    churn = churn_retention(warehouse, WAREHOUSE, week_context(context))
    customers, churned = int(churn["customers"].sum()), int(churn["churned"].sum())
    return dg.Output(
        churn,
        metadata={
            "dagster/row_count": len(churn),
            "customers": customers,
            "churned": churned,
            "churn_rate_pct": round(100.0 * churned / customers, 3) if customers else 0.0,
            "active": int(churn["active"].sum()),
            "at_risk": int(churn["at_risk"].sum()),
            "new_customers": int(churn["new_customers"].sum()),
            "returning_customers": int(churn["returning_customers"].sum()),
            **lineage_metadata(tables.MART_CHURN_RETENTION),
        },
    )


@dg.asset(
    **_mart(
        tables.MART_COHORT_RETENTION,
        MartCohortRetentionType,
        [FACT, tables.key(tables.CUSTOMER_HISTORY), tables.key(tables.CUSTOMER_IDENTITY_MAP)],
    )
)
def mart_cohort_retention(context: dg.AssetExecutionContext, warehouse: WarehouseSQL) -> dg.Output:
    """`customer_analytics.mart_cohort_retention`: per week, each weekly cohort of first purchases
    with its size and how many of it bought in the week (retention rate)."""
    cohorts = cohort_retention(warehouse, WAREHOUSE, week_context(context))
    return dg.Output(
        cohorts,
        metadata={
            "dagster/row_count": len(cohorts),
            "cohorts": len(cohorts),
            "retained": int(cohorts["retained"].sum()),
            **lineage_metadata(tables.MART_COHORT_RETENTION),
        },
    )
