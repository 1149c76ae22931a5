"""Customer history carried forward: each week's running totals from the previous week's plus its
own."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from customer_assets import tables
from customer_assets.assets.common import (
    OWNERS,
    PARTITIONS,
    finished_week,
    intermediate,
    keeps_working_files,
    week_context,
    working_files,
)
from customer_assets.assets.week_order import after_previous_week
from customer_assets.assets.week_rates import week_rates
from customer_assets.dagster_types import CustomerHistoryFileType, check_customer_history
from customer_assets.frames import StoredFrame
from customer_assets.logic.history import (
    HISTORY_INPUTS,
    balance_rules,
    week_totals,
)
from customer_assets.logic.identity import distinct_ids
from customer_assets.partitions import FIRST_WEEK, latest_materialization
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.rates import EcbRates
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings
from customer_assets.sources.opening_balance import opening_balance
from customer_assets.sql.history import (
    carry_to_file,
    first_loaded_week,
    loaded_totals_to_file,
    previous_week_totals,
)
from customer_assets.suppression import drop_suppressed_rows, holds_customer_ids
from customer_assets.weeks import previous_week

HISTORY = tables.key(tables.CUSTOMER_HISTORY)
NO_OPENING = {"customers": 0, "transactions": 0}


class HistoryConfig(dg.Config):
    full_rescan: bool = Field(
        default=False,
        description="Recompute the totals from every week loaded in the "
        "warehouse instead of carrying the previous week's (e.g. after repairing history).",
    )
    repair_reason: str = Field(
        default="",
        description="Why this run rebuilds the week (set by the sensor "
        "source_changes; shown by `dagster sensor preview` and in the metadata).",
    )


def previous_materialization(instance: dg.DagsterInstance, partition_key: str) -> int | None:
    """Storage id of the latest materialization of the week before ``partition_key``, if there is
    one."""
    if partition_key <= FIRST_WEEK:
        return None
    record = latest_materialization(instance, HISTORY, previous_week(partition_key))
    return record.storage_id if record else None


def _rescanned(
    context,
    source_db: PostgresSource,
    warehouse: WarehouseSQL,
    settings: PipelineSettings,
    hash_key: str,
    week_start,
    rates: EcbRates,
    files: tuple[Path, Path],
) -> tuple[list[Path], dict[str, int]]:
    """Totals before the week without a previous partition, as Parquet files (``files``: where the
    opening balance and the loaded weeks' totals go): the opening balance of the source's history
    before the first loaded week (computed once, on the source), and every loaded week since. Also
    the opening balance's customers and transactions."""
    transactions = tables.key(tables.WEEKLY_TRANSACTIONS).path
    opens_at = first_loaded_week(warehouse, transactions, week_start) or week_start
    rules = balance_rules(
        opens_at.date(), settings.max_amount_usd, week_rates(settings, rates, context.partition_key)
    )
    with source_db.connect(context.log) as conn:
        opening = opening_balance(conn, source_db.schema(conn), opens_at, rules)
    # an erased customer never comes back
    opening, _erased = drop_suppressed_rows(opening, warehouse, hash_key)
    counts = {
        "customers": pc.count_distinct(opening.column("customer_id")).as_py(),
        "transactions": int(pc.sum(opening.column("transaction_count")).as_py() or 0),
    }
    context.log.info(
        f"opening balance before {opens_at.date()}: {counts['customers']:,} customers, "
        f"{counts['transactions']:,} transactions from the source's history"
    )
    opening_file, loaded_file = files
    opening_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(opening, opening_file)
    del opening
    loaded = loaded_totals_to_file(warehouse, transactions, week_start, loaded_file)
    return [opening_file, *([loaded_file] if loaded else [])], counts


def history_metadata(
    counts: dict[str, int],
    week: pd.DataFrame,
    opening: dict[str, int],
    partition_key: str,
    config: HistoryConfig,
    previous_id: int | None,
) -> dict:
    """The history's metadata: how it was built (carried from which materialization, or rescanned
    with an opening balance) and why, which the sensor ``source_changes`` reads back to find a
    carried history left stale, and its customer counts (``new_customers``: first purchase in the
    week, new to the carried history, its opening balance included)."""
    return {
        "dagster/row_count": counts["rows"],
        "mode": "carried" if previous_id is not None else "full_rescan",
        "customers": counts["customers"],
        "week_customers": len(distinct_ids(week["customer_id"])),
        "new_customers": counts["new_customers"],
        "previous_week": previous_week(partition_key),
        "opening_balance_customers": opening["customers"],
        "opening_balance_transactions": opening["transactions"],
        "repair_reason": config.repair_reason or "",
        "previous_materialization_id": dg.MetadataValue.int(previous_id)
        if previous_id is not None
        else dg.MetadataValue.null(),
    }


def check_carried(history: StoredFrame, counts: dict[str, int]) -> None:
    """The carried rows against the CustomerHistory model, a batch at a time, and each customer and
    currency once over the whole week."""
    if counts["duplicate_keys"]:
        raise dg.Failure(
            f"customer_history: {counts['duplicate_keys']} customer-currency key(s) twice"
        )
    for batch in history.batches():
        check_customer_history(batch)


@dg.asset(
    key=HISTORY,
    ins={"validated_transactions": intermediate("validated_transactions", StoredFrame)},
    partitions_def=PARTITIONS,
    output_required=False,
    group_name="transform",
    kinds={"pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "week_start"},
    tags=holds_customer_ids() | keeps_working_files(),
    dagster_type=CustomerHistoryFileType,
)
def customer_history(
    context: dg.AssetExecutionContext,
    config: HistoryConfig,
    warehouse: WarehouseSQL,
    source_db: PostgresSource,
    settings: PipelineSettings,
    pii: PiiKey,
    rates: EcbRates,
    validated_transactions: StoredFrame,
):
    """`customer_analytics.customer_history`: per customer and currency, the running totals as of
    the week's end (amount in thousandths, transaction count, first and last purchase, last purchase
    before the week).

    Carried: the previous week's partition plus this week's validated rows, joined by DuckDB from
    files (``sql/history.py``), so a week costs the same after years of history and the step's
    memory does not follow the customers the history holds. When the previous week was never
    materialized (the first week, a backfill out of order) or on request (`full_rescan`), the totals
    are the opening balance (every valid transaction of the source before the first loaded week,
    summed once on the source) plus every week already loaded in the warehouse, so lifetime figures
    are right from the first week; the sensor `source_changes` re-runs the weeks after one that
    changed, so carried totals end equal to a full recompute. Only validated rows count.

    Weeks run at once keep their order: the step first waits for a started run of the week before
    (``week_order.py``; no self-dependency, which an asset backfill would run alone).
    """
    if finished_week(context, validated_transactions):
        return
    waited = after_previous_week(context, settings.previous_week_wait_seconds)
    week_start = week_context(context).week_start
    week = week_totals(validated_transactions.read(HISTORY_INPUTS))
    key = context.partition_key
    previous_id = None if config.full_rescan else previous_materialization(context.instance, key)
    files = working_files(context, settings, HISTORY, "before", "carried", "opening", "loaded")
    before_file, carried_file = files[:2]
    try:
        if previous_id is not None:
            rows = previous_week_totals(warehouse, HISTORY.path, week_start, before_file)
            before, opening = (before_file if rows else None), NO_OPENING
        else:
            before, opening = _rescanned(
                context, source_db, warehouse, settings, pii.hash_key, week_start, rates, files[2:]
            )
        counts = carry_to_file(before, week, week_start, carried_file)
        history = StoredFrame(carried_file)
        check_carried(history, counts)
        metadata = history_metadata(counts, week, opening, key, config, previous_id)
        context.log.info(
            f"customer history of {key}: {metadata['mode']}, "
            f"{counts['rows']:,} customer-currency rows"
            + (f"; repair run: {config.repair_reason}" if config.repair_reason else "")
        )
        yield dg.Output(history, metadata=metadata | waited)
    finally:  # in the warehouse by now (or failed): neither file outlives the step
        for path in files:
            path.unlink(missing_ok=True)
