"""Which of the week's transaction ids another loaded week holds, and whether each was reused or
moved.

Kept apart from the validation asset (``validation.py``) because it is the one step of validation
that reads the warehouse and, for the few ids found there, the source again: an id the source still
holds in the other week is reused (quarantined ``DUPLICATE_ACROSS_WEEKS``), one it no longer holds
there moved (the load moves it).
"""

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.assets.common import week_context
from customer_assets.assets.warehouse import UNIQUE_WITHIN_WEEKS  # the load's window, spelled once
from customer_assets.io_managers.warehouse import unique_window
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.sources.extract import completed_ids
from customer_assets.weeks import WeekContext, monday_of

TRANSACTIONS_TABLE = (tables.SCHEMA, tables.WEEKLY_TRANSACTIONS)

HELD_ELSEWHERE_SQL = """
SELECT w.transaction_id, w.{ts} AS ts FROM {table} w
WHERE w.{ts} >= @window_start AND w.{ts} < @window_end
  AND NOT (w.{ts} >= @week_start AND w.{ts} < @week_end)
  AND w.transaction_id IN (SELECT i FROM {ids})
"""


def _week_of(timestamps: pd.Series) -> pd.Series:
    return pd.to_datetime(timestamps, utc=True).map(lambda t: monday_of(t.date()))


def held_in_other_weeks(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseSQL,
    source_db: PostgresSource,
    raw: pd.DataFrame,
) -> frozenset[str]:
    """The week's ids that the warehouse holds in another week (within the load's window) while the
    source still holds them, completed, in that week: reused ids. The other ids the warehouse holds
    elsewhere moved (their old week no longer has them), and the load moves them. Usually no id is
    held elsewhere and the source is not read."""
    if not warehouse.exists(*TRANSACTIONS_TABLE):
        return frozenset()
    held = _held_elsewhere(warehouse, week_context(context), raw)
    if held.empty:
        return frozenset()
    held = held.assign(week=_week_of(held["ts"]))
    there = _still_in_source(context, source_db, held)
    reused = held.merge(
        there[["transaction_id", "week"]].drop_duplicates(), on=["transaction_id", "week"]
    )
    _log_reused_and_moved(context, held, reused)
    return frozenset(reused["transaction_id"])


def _held_elsewhere(warehouse: WarehouseSQL, span: WeekContext, raw: pd.DataFrame) -> pd.DataFrame:
    """The warehouse's rows (transaction_id, ts) of the week's ids in other weeks of the load's
    window, asked in as few parts as the warehouse's list parameters allow (one in DuckDB)."""
    window = unique_window(span.week_start, span.week_end, UNIQUE_WITHIN_WEEKS)
    ids = raw["transaction_id"].dropna().unique()
    names = {
        "table": warehouse.table(*TRANSACTIONS_TABLE),
        "ts": warehouse.quote("timestamp"),
        "ids": warehouse.unnest("ids", "i"),
    }
    params = {
        "week_start": span.week_start,
        "week_end": span.week_end,
        "window_start": window[0],
        "window_end": window[1],
    }
    found = [
        warehouse.query(HELD_ELSEWHERE_SQL, {**params, "ids": part}, **names)
        for part in warehouse.in_parts(ids)
    ]
    return (
        pd.concat(found, ignore_index=True)
        if found
        else pd.DataFrame(columns=["transaction_id", "ts"])
    )


def _still_in_source(
    context: dg.AssetExecutionContext, source_db: PostgresSource, held: pd.DataFrame
) -> pd.DataFrame:
    """Where the source holds the held ids completed, within the weeks the warehouse holds them in,
    each row with its week."""
    start = pd.Timestamp(min(held["week"])).tz_localize("UTC").to_pydatetime()
    end = (
        (pd.Timestamp(max(held["week"])) + pd.Timedelta(days=7)).tz_localize("UTC").to_pydatetime()
    )
    with source_db.connect(context.log) as conn:
        there = completed_ids(
            conn,
            source_db.schema(conn, ("transactions",)),
            held["transaction_id"].tolist(),
            start,
            end,
        )
    return there.assign(week=_week_of(there["timestamp"]))


def _log_reused_and_moved(
    context: dg.AssetExecutionContext, held: pd.DataFrame, reused: pd.DataFrame
) -> None:
    """Warns of the reused ids (with a few examples and their weeks), tells of the moved ones."""
    moved = sorted(set(held["transaction_id"]) - set(reused["transaction_id"]))
    if len(reused):
        examples = ", ".join(f"{r.transaction_id} ({r.week})" for r in reused.head(5).itertuples())
        context.log.warning(
            f"DUPLICATE_ACROSS_WEEKS: {reused['transaction_id'].nunique()} transaction id(s) "
            "of the week are loaded in another week whose source rows still hold them "
            f"(e.g. {examples}): reused ids, quarantined; the other week's rows stay"
        )
    if moved:
        context.log.info(
            f"{len(moved)} transaction(s) moved here from another loaded week (e.g. "
            f"{', '.join(moved[:5])}): the load moves them"
        )
