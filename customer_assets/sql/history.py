"""The carried history's queries in the warehouse: the week before's totals, every loaded week's
totals before a week (the opening balance's rescan) and the first loaded week. What the totals mean,
and how a week is carried, is ``logic/history.py``."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

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
    warehouse: WarehouseSQL, history_table: list[str], week_start: datetime
) -> pd.DataFrame:
    """The carried history's partition of the week before ``week_start``, from the warehouse."""
    params = {"week_start": week_start.replace(tzinfo=None) - timedelta(days=7)}
    return warehouse.query(PREVIOUS_SQL, params, table=warehouse.table(*history_table))


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


def loaded_totals_before(
    warehouse: WarehouseSQL,
    transactions_table: list[str],
    week_start: datetime,
    empty: pd.DataFrame,
) -> pd.DataFrame:
    """Totals over every week loaded before ``week_start`` (``empty`` when nothing is loaded
    yet)."""
    if not warehouse.exists(*transactions_table):
        return empty
    return warehouse.query(
        RESCAN_SQL,
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
