"""The SQL of the warehouse table's checks (DuckDB and BigQuery alike, through ``WarehouseSQL``);
the checks' outcomes are plain values in ``logic/checks.py``."""

from __future__ import annotations

import pandas as pd

from customer_assets.resources.warehouse_sql import WarehouseSQL

DUPLICATED_IDS_SQL = """
SELECT transaction_id, count(*) AS copies FROM {table}
WHERE {ts} >= @window_start AND {ts} < @window_end
  AND transaction_id IN (SELECT transaction_id FROM {table}
                         WHERE {ts} >= @week_start AND {ts} < @week_end)
GROUP BY transaction_id HAVING count(*) > 1 ORDER BY copies DESC, transaction_id
"""
WEEK_ROWS_SQL = "SELECT count(*) AS n FROM {table} WHERE {ts} >= @week_start AND {ts} < @week_end"


def duplicated_ids(
    warehouse: WarehouseSQL, table: list[str], week: tuple, window: tuple
) -> pd.DataFrame:
    """Ids of the week held twice, within the week or by another week of the window:
    (transaction_id, copies)."""
    params = {
        "week_start": week[0],
        "week_end": week[1],
        "window_start": window[0],
        "window_end": window[1],
    }
    return warehouse.query(
        DUPLICATED_IDS_SQL, params, table=warehouse.table(*table), ts=warehouse.quote("timestamp")
    )


def rows_in_week(warehouse: WarehouseSQL, table: list[str], week: tuple) -> int:
    """The rows of ``table`` whose timestamp lies in the week."""
    params = {"week_start": week[0], "week_end": week[1]}
    found = warehouse.query(
        WEEK_ROWS_SQL, params, table=warehouse.table(*table), ts=warehouse.quote("timestamp")
    )
    return int(found["n"].iloc[0])
