"""The carried history's queries in the warehouse: the week before's totals, every loaded week's
totals before a week (the opening balance's rescan) and the first loaded week. What the totals mean,
and how a week is carried, is ``logic/history.py``."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from customer_assets.logic.duckdb_memory import connect, literal
from customer_assets.resources.warehouse_sql import WarehouseSQL

# Every loaded week before this one, from the warehouse's own copy of the validated rows.
RESCAN_SQL = """
SELECT customer_id, currency, SUM(CAST(ROUND(amount * 1000) AS {INT})) AS amount_milli,
       COUNT(*) AS transaction_count, MIN({ts}) AS first_purchase_at, MAX({ts}) AS last_purchase_at
FROM {table} WHERE week_start < @week_start GROUP BY customer_id, currency
"""
PREVIOUS_SQL = "SELECT * FROM {table} WHERE week_start = @week_start"
# Every row (each currency) of the customers who bought in the week, as of its end: a row the week
# added to has a last purchase other than the one before the week (carry's invariant; no timestamp
# parameter, whose type differs between the engines).
WEEK_CUSTOMERS_SQL = """
SELECT customer_id, currency, amount_milli, transaction_count, first_purchase_at, last_purchase_at,
       last_purchase_before_week
FROM {table}
WHERE week_start = @week_start AND customer_id IN (
    SELECT customer_id FROM {table}
    WHERE week_start = @week_start
      AND (last_purchase_before_week IS NULL OR last_purchase_at <> last_purchase_before_week)
)
"""
FIRST_LOADED_SQL = (
    "SELECT MIN(week_start) AS first_week FROM {table} WHERE week_start < @week_start"
)


def previous_week_totals(
    warehouse: WarehouseSQL, history_table: list[str], week_start: datetime, path: Path
) -> int:
    """The carried history's partition of the week before ``week_start``, from the warehouse to the
    Parquet file ``path`` a batch at a time; its rows (0: no file)."""
    params = {"week_start": week_start.replace(tzinfo=None) - timedelta(days=7)}
    return warehouse.to_parquet(PREVIOUS_SQL, path, params, table=warehouse.table(*history_table))


def week_customer_totals(
    warehouse: WarehouseSQL, history_table: list[str], week_start: datetime
) -> pd.DataFrame:
    """The carried history of the week starting ``week_start``, of the customers who bought in it
    only (all their currencies): what the transform reads, so its memory follows the week's
    customers, not every customer the history holds."""
    return warehouse.query(
        WEEK_CUSTOMERS_SQL,
        {"week_start": week_start.replace(tzinfo=None)},
        table=warehouse.table(*history_table),
    )


def loaded_totals_to_file(
    warehouse: WarehouseSQL, transactions_table: list[str], week_start: datetime, path: Path
) -> int:
    """Totals over every week loaded before ``week_start``, from the warehouse to the Parquet file
    ``path`` a batch at a time; its rows (0: no file)."""
    if not warehouse.exists(*transactions_table):
        return 0
    return warehouse.to_parquet(
        RESCAN_SQL,
        path,
        {"week_start": week_start.replace(tzinfo=None)},
        table=warehouse.table(*transactions_table),
        ts=warehouse.quote("timestamp"),
    )


def first_loaded_week(
    warehouse: WarehouseSQL, transactions_table: list[str], week_start: datetime
) -> datetime | None:
    """The first week loaded before ``week_start`` (None when none is): the opening balance ends
    there."""
    if not warehouse.exists(*transactions_table):
        return None
    found = warehouse.query(
        FIRST_LOADED_SQL,
        {"week_start": week_start.replace(tzinfo=None)},
        table=warehouse.table(*transactions_table),
    )["first_week"].iloc[0]
    return None if pd.isna(found) else pd.Timestamp(found).tz_localize("UTC").to_pydatetime()


# The week carried: the totals before it plus its own, per customer and currency (``logic/history``'s
# ``carry``, as DuckDB runs it over files, never a frame of every customer). LEAST and GREATEST skip
# a NULL in DuckDB; the timestamps are compared in UTC.
CARRY_SQL = """
COPY (
    SELECT COALESCE(w.customer_id, b.customer_id) AS customer_id,
           COALESCE(w.currency, b.currency) AS currency,
           CAST(COALESCE(b.amount_milli, 0) + COALESCE(w.amount_milli, 0) AS BIGINT) AS amount_milli,
           CAST(COALESCE(b.transaction_count, 0) + COALESCE(w.transaction_count, 0) AS BIGINT)
               AS transaction_count,
           LEAST(CAST(b.first_purchase_at AS TIMESTAMPTZ), CAST(w.first_purchase_at AS TIMESTAMPTZ))
               AS first_purchase_at,
           GREATEST(CAST(b.last_purchase_at AS TIMESTAMPTZ), CAST(w.last_purchase_at AS TIMESTAMPTZ))
               AS last_purchase_at,
           CAST(b.last_purchase_at AS TIMESTAMPTZ) AS last_purchase_before_week,
           CAST($week_start AS TIMESTAMP) AS week_start
    FROM {before} AS b
    FULL OUTER JOIN week_totals AS w ON b.customer_id = w.customer_id AND b.currency = w.currency
) TO {out} (FORMAT parquet)
"""
# Totals over disjoint periods, each a Parquet file (the opening balance, the weeks loaded since),
# summed per customer and currency.
SUMMED_SQL = """
(SELECT customer_id, currency, SUM(amount_milli) AS amount_milli,
        SUM(transaction_count) AS transaction_count, MIN(first_purchase_at) AS first_purchase_at,
        MAX(last_purchase_at) AS last_purchase_at
 FROM ({parts}) GROUP BY customer_id, currency)
"""
PART_SQL = (
    "SELECT customer_id, currency, amount_milli, transaction_count, "
    "CAST(first_purchase_at AS TIMESTAMPTZ) AS first_purchase_at, "
    "CAST(last_purchase_at AS TIMESTAMPTZ) AS last_purchase_at FROM read_parquet({file})"
)
EMPTY_BEFORE = (
    "(SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS currency, NULL::BIGINT AS amount_milli,"
    " NULL::BIGINT AS transaction_count, NULL::TIMESTAMPTZ AS first_purchase_at,"
    " NULL::TIMESTAMPTZ AS last_purchase_at WHERE false)"
)
CARRY_MEMORY_LIMIT = "512MB"
CARRIED_COUNTS_SQL = """
SELECT count(*) AS rows, count(DISTINCT customer_id) AS customers,
       count(DISTINCT CASE WHEN first_purchase_at >= CAST($week_start AS TIMESTAMPTZ)
                           THEN customer_id END) AS new_customers,
       count(*) - count(DISTINCT (customer_id, currency)) AS duplicate_keys
FROM read_parquet({out})
"""


def _before(before: Path | list[Path] | pd.DataFrame | None) -> str:
    """The relation of the totals before the week (see ``carry_to_file``)."""
    if isinstance(before, pd.DataFrame):
        return "before_totals"
    if isinstance(before, list):
        if not before:
            return EMPTY_BEFORE
        parts = " UNION ALL ".join(PART_SQL.format(file=literal(f)) for f in before)
        return SUMMED_SQL.format(parts=parts)
    return f"read_parquet({literal(before)})" if before is not None else EMPTY_BEFORE


def carry_to_file(
    before: Path | list[Path] | pd.DataFrame | None,
    week: pd.DataFrame,
    week_start: datetime,
    out: Path,
) -> dict[str, int]:
    """The history as of the end of the week starting ``week_start`` written to ``out``: the totals
    before it (the previous week's partition as a Parquet file; Parquet files of totals over
    disjoint periods, summed, such as the opening balance and the weeks loaded since; a frame; None:
    nothing before) plus ``week`` (``week_totals``). DuckDB joins them from the file,
    so memory does not follow the number of customers the history holds. Returns the rows, the
    customers, the customers new in the week and the (customer, currency) keys found twice."""
    spill = out.with_suffix(".spill")  # DuckDB's, past the limit; gone with the connection
    con = connect()
    try:
        # rows in any order (the warehouse keeps none), spilled to disk past the limit
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET memory_limit = '{CARRY_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = {literal(spill)}")
        con.register("week_totals", week)
        if isinstance(before, pd.DataFrame):
            con.register("before_totals", before)
        source = _before(before)
        start = {"week_start": week_start.replace(tzinfo=None)}
        out.parent.mkdir(parents=True, exist_ok=True)
        con.execute(CARRY_SQL.format(before=source, out=literal(out)), start)
        counts = con.execute(CARRIED_COUNTS_SQL.format(out=literal(out)), start).fetchone()
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    names = ("rows", "customers", "new_customers", "duplicate_keys")
    return dict(zip(names, map(int, counts), strict=True))
