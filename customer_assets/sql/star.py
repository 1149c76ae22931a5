"""The star schema's queries in the warehouse: each loaded transaction of the week with how many
versions of its customer, its product and its day match it (one query for DuckDB and BigQuery), and
the product catalogue kept for a week. Which matches make a fact row is ``logic/star.py``'s
``resolve_keys``."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from customer_assets import tables
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.weeks import WeekContext


def _day_key(column: str) -> str:
    return f"(EXTRACT(YEAR FROM {column}) * 10000 + EXTRACT(MONTH FROM {column}) * 100 + EXTRACT(DAY FROM {column}))"


# Each transaction of the week joined to the dimension rows valid at its time. Its customer is the
# person its shop id belongs to in the week's identity (customer_identity_map); a customer version
# matches when the transaction's week lies in [effective_from, effective_to): versions change at
# week boundaries. A key that matches several rows repeats the transaction (resolve_keys finds it);
# one that matches none leaves the key NULL.
FACT_SQL = f"""
SELECT t.transaction_id, c.customer_key, p.product_key, {_day_key("t.{ts}")} AS date_key,
       COALESCE(i.customer_id, TRIM(t.customer_id)) AS customer_id, t.product_id, t.{{ts}}, t.week_start, t.amount, t.currency,
       t.amount_usd, t.fx_rate, t.fx_rate_date, t.is_anomaly, t.anomaly_flags, d.date_key AS matched_date_key
FROM {{transactions}} t
  LEFT JOIN {{identity}} i ON i.week_start = t.week_start AND i.source = 'database'
    AND i.source_customer_id = TRIM(t.customer_id)
  LEFT JOIN {{dim_customers}} c ON c.customer_id = i.customer_id
    AND c.effective_from <= t.week_start AND t.week_start < c.effective_to
  LEFT JOIN {{dim_products}} p ON p.product_id = t.product_id
    AND p.effective_from <= t.week_start AND t.week_start < p.effective_to
  LEFT JOIN {{dim_date}} d ON d.date_key = {_day_key("t.{ts}")}
WHERE t.week_start = @week_start
"""


def fact_candidates(warehouse: WarehouseSQL, schema: str, week: WeekContext) -> pd.DataFrame:
    """The week's loaded transactions with their dimension matches (see ``FACT_SQL``)."""
    names = {
        name: warehouse.table(schema, table)
        for name, table in (
            ("dim_customers", tables.DIM_CUSTOMERS),
            ("dim_products", tables.DIM_PRODUCTS),
            ("dim_date", tables.DIM_DATE),
            ("identity", tables.CUSTOMER_IDENTITY_MAP),
            ("transactions", tables.WEEKLY_TRANSACTIONS),
        )
    }
    names["ts"] = warehouse.quote("timestamp")
    rows = warehouse.query(FACT_SQL, {"week_start": _naive(week.week_start)}, **names)
    # Nanosecond timestamps, as the models have them (engines hand back microseconds): the type
    # check then takes its cheap path instead of pandera's full one.
    for column, dtype in rows.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            rows[column] = rows[column].astype(
                "datetime64[ns, UTC]" if getattr(dtype, "tz", None) else "datetime64[ns]"
            )
    return rows


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def kept_snapshot(warehouse: WarehouseSQL, schema: str, week_start: datetime) -> pd.DataFrame:
    """The product catalogue stored for the week (empty when the week has none yet), typed as the
    model."""
    from customer_assets.schemas import ProductSnapshots

    columns = list(ProductSnapshots.to_schema().columns)
    if not warehouse.exists(schema, tables.PRODUCT_SNAPSHOTS):
        return pd.DataFrame(columns=columns)
    rows = warehouse.query(
        "SELECT * FROM {table} WHERE week_start = @week_start ORDER BY product_id",
        {"week_start": week_start},
        table=warehouse.table(schema, tables.PRODUCT_SNAPSHOTS),
    )
    return ProductSnapshots.validate(rows[columns], lazy=True) if len(rows) else rows[columns]
