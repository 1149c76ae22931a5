"""The star schema's queries in the warehouse: each loaded transaction of the week resolved to the
dimension rows of its time (one query for DuckDB and BigQuery, whose rows stream into two Parquet
files, the facts and their quarantine: the week never passes through a frame), and the product
catalogue kept for a week."""

from __future__ import annotations

from contextlib import ExitStack, closing
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from customer_assets import tables
from customer_assets.frames import empty_parquet
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


# Each loaded transaction of the week once, with how many rows of each dimension match it: its
# customer is the person its shop id belongs to in the week's identity (customer_identity_map), and a
# customer or product version matches when the week lies in [effective_from, effective_to) (versions
# change at week boundaries). Every transaction of the week has the same week, so each dimension is
# resolved per id first (a small table), and the week's rows then meet at most one row of each: no
# aggregation over the week's rows. Exactly one match of each key makes a fact row; none
# (NO_<KEY>) or several (AMBIGUOUS_<KEY>) quarantine it, the reasons in this order, ';'-separated.
RESOLVED_SQL = f"""
WITH customers AS (
  SELECT i.source_customer_id, MIN(i.customer_id) AS customer_id,
         COUNT(DISTINCT c.customer_key) AS matches, MIN(c.customer_key) AS customer_key
  FROM {{identity}} i
    LEFT JOIN {{dim_customers}} c ON c.customer_id = i.customer_id
      AND c.effective_from <= @week_start AND @week_start < c.effective_to
  WHERE i.week_start = @week_start AND i.source = 'database'
  GROUP BY i.source_customer_id
), products AS (
  SELECT product_id, COUNT(DISTINCT product_key) AS matches, MIN(product_key) AS product_key
  FROM {{dim_products}}
  WHERE effective_from <= @week_start AND @week_start < effective_to
  GROUP BY product_id
), days AS (
  SELECT DISTINCT date_key FROM {{dim_date}}
), matched AS (
  SELECT t.transaction_id, c.customer_key, p.product_key, {_day_key("t.{ts}")} AS date_key,
         COALESCE(c.customer_id, TRIM(t.customer_id)) AS customer_id, t.product_id, t.{{ts}},
         t.week_start, t.amount, t.currency, t.amount_usd, t.fx_rate, t.fx_rate_date, t.is_anomaly,
         t.anomaly_flags, COALESCE(c.matches, 0) AS customer_matches,
         COALESCE(p.matches, 0) AS product_matches,
         CASE WHEN d.date_key IS NULL THEN 0 ELSE 1 END AS date_matches
  FROM {{transactions}} t
    LEFT JOIN customers c ON c.source_customer_id = TRIM(t.customer_id)
    LEFT JOIN products p ON p.product_id = t.product_id
    LEFT JOIN days d ON d.date_key = {_day_key("t.{ts}")}
  WHERE t.week_start = @week_start
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
    facts: Path,
    quarantine: Path,
) -> int:
    """The week's loaded transactions resolved in the warehouse (``RESOLVED_SQL``), their rows
    streamed a batch at a time into the fact rows (``facts``) and the quarantined ones with their
    reasons (``quarantine``), Parquet files typed as their models. Returns the transactions
    resolved (each once)."""
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
    outputs = ((facts, FACT_COLUMNS, False), (quarantine, QUARANTINE_COLUMNS, True))
    writers: dict[Path, pq.ParquetWriter] = {}
    rows = 0
    # The writers closed, and the query's connection let go, whatever happens.
    with ExitStack() as stack:
        batches = stack.enter_context(closing(warehouse.batches(RESOLVED_SQL, start, **names)))
        for batch in batches:
            rows += batch.num_rows
            quarantined = pc.not_equal(batch.column("reason_codes"), "")
            for out, columns, wanted in outputs:
                part = batch.filter(quarantined if wanted else pc.invert(quarantined))
                part = part.select(columns)
                if out not in writers:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writers[out] = stack.enter_context(pq.ParquetWriter(out, part.schema))
                writers[out].write_batch(part)
    for out, model in ((facts, FactTransactions), (quarantine, FactTransactionsQuarantine)):
        if out not in writers:  # no row at all: an empty week, typed by the model
            empty_parquet(model, out)
    return rows


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
