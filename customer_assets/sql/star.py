"""The star schema's queries in the warehouse: each loaded transaction of the week resolved to the
dimension rows of its time (one query for DuckDB and BigQuery, whose rows stream to a Parquet file
and are split there into the facts and their quarantine: the week never passes through a frame),
and the product catalogue kept for a week."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from customer_assets import tables
from customer_assets.frames import empty_parquet
from customer_assets.logic.duckdb_memory import connect, literal, quoted
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import FactTransactions, FactTransactionsQuarantine
from customer_assets.weeks import WeekContext


def _day_key(column: str) -> str:
    return f"(EXTRACT(YEAR FROM {column}) * 10000 + EXTRACT(MONTH FROM {column}) * 100 + EXTRACT(DAY FROM {column}))"


FACT_COLUMNS = list(FactTransactions.to_schema().columns)
QUARANTINE_COLUMNS = list(FactTransactionsQuarantine.to_schema().columns)


def _columns(names: list[str]) -> str:
    """A select list of ``names``, the column ``timestamp`` quoted by the engine."""
    return ", ".join("{ts}" if name == "timestamp" else name for name in names)


def _reason(matches: str, key: str) -> str:
    return (
        f"CASE WHEN {matches} = 0 THEN 'NO_{key};' WHEN {matches} > 1 THEN 'AMBIGUOUS_{key};' "
        "ELSE '' END"
    )


# Each transaction of the week joined to the dimension rows valid at its time. Its customer is the
# person its shop id belongs to in the week's identity (customer_identity_map); a customer version
# matches when the transaction's week lies in [effective_from, effective_to): versions change at
# week boundaries. A key that matches several rows repeats the transaction; one that matches none
# leaves the key NULL.
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


# Each transaction of the week once, with how many versions of each key matched it: exactly one of
# each makes a fact row; none (NO_<KEY>) or several (AMBIGUOUS_<KEY>) quarantine it, the reasons in
# this order, ';'-separated. The columns besides the keys are the transaction's own, the same on
# every repeated row.
RESOLVED_SQL = f"""
WITH candidates AS ({FACT_SQL}),
matched AS (
  SELECT transaction_id,
         COUNT(DISTINCT customer_key) AS customer_matches, COUNT(DISTINCT product_key) AS product_matches,
         COUNT(DISTINCT matched_date_key) AS date_matches,
         MIN(customer_key) AS customer_key, MIN(product_key) AS product_key,
         ANY_VALUE(date_key) AS date_key, ANY_VALUE(customer_id) AS customer_id,
         ANY_VALUE(product_id) AS product_id, ANY_VALUE({{ts}}) AS {{ts}},
         ANY_VALUE(week_start) AS week_start, ANY_VALUE(amount) AS amount,
         ANY_VALUE(currency) AS currency, ANY_VALUE(amount_usd) AS amount_usd,
         ANY_VALUE(fx_rate) AS fx_rate, ANY_VALUE(fx_rate_date) AS fx_rate_date,
         ANY_VALUE(is_anomaly) AS is_anomaly, ANY_VALUE(anomaly_flags) AS anomaly_flags
  FROM candidates GROUP BY transaction_id
)
SELECT {_columns(FACT_COLUMNS)},
       RTRIM(CONCAT({_reason("customer_matches", "CUSTOMER_VERSION")}, {_reason("product_matches", "PRODUCT_VERSION")},
                    {_reason("date_matches", "DATE")}), ';') AS reason_codes
FROM matched
"""


def resolve_week(
    warehouse: WarehouseSQL,
    schema: str,
    week: WeekContext,
    resolved: Path,
    facts: Path,
    quarantine: Path,
) -> int:
    """The week's loaded transactions resolved in the warehouse (``RESOLVED_SQL``), streamed to the
    Parquet file ``resolved``, then split by DuckDB into the fact rows (``facts``) and the
    quarantined ones with their reasons (``quarantine``), each typed as its model. Returns the
    transactions resolved (each once)."""
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
    start = {"week_start": week.week_start.replace(tzinfo=None)}
    loaded = warehouse.to_parquet(RESOLVED_SQL, resolved, start, **names)
    if not loaded:  # no file: an empty week, typed by the models
        empty_parquet(FactTransactions, facts)
        empty_parquet(FactTransactionsQuarantine, quarantine)
        return 0
    con = connect()
    try:
        source = f"read_parquet({literal(resolved)})"
        for out, columns, where in (
            (facts, FACT_COLUMNS, "reason_codes = ''"),
            (quarantine, QUARANTINE_COLUMNS, "reason_codes <> ''"),
        ):
            select = ", ".join(quoted(c) for c in columns)
            con.execute(
                f"COPY (SELECT {select} FROM {source} WHERE {where}) TO {literal(out)} (FORMAT parquet)"
            )
    finally:
        con.close()
    return loaded


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
