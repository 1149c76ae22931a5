"""One real customer across sources and weeks: the ERP's records of the week, and the carried identity over the
CRM, the ERP and the database (``logic/resolution.py``)."""

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd

from customer_assets.assets.common import (
    ETL, OWNERS, PARTITIONS, WAREHOUSE, WAREHOUSE_KIND, finished_week, intermediate, selected_events, week_context)
from customer_assets.assets.profiles import AFTER_TRANSACTIONS
from customer_assets.erasure import drop_suppressed
from customer_assets.io_managers.frames import StoredFrame
from customer_assets.io_managers.types import (
    CustomerIdentityMapType, ErpCustomersType, IdentityMergesType, column_schema)
from customer_assets.logic.resolution import IDENTITY_COLUMNS, carry_identity, standardise_erp, week_records
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import CustomerIdentityMap, IdentityMerges
from customer_assets.sources.extract import take_replaced_count


@dg.asset(key_prefix=[ETL], partitions_def=PARTITIONS, group_name="profiles", kinds={"postgres", "pandas"},
          owners=OWNERS, dagster_type=ErpCustomersType, op_tags=AFTER_TRANSACTIONS)
def erp_customers(context: dg.AssetExecutionContext, erp: ErpSource, crm: CrmSource,
                  source_db: PostgresSource) -> dg.Output:
    """ERP customer records modified in the week (incremental by modification time), standardised; email and
    phone only as keyed HMAC-SHA256 (the CRM's key). Without an ERP (ERP_DB_HOST unset) the week has none."""
    ctx = week_context(context)
    if erp.kind == "none":
        context.log.info("No ERP configured (ERP_DB_HOST unset): identity resolution uses the CRM and the database.")
    records = erp.fetch_week(ctx.week_start, ctx.week_end, source_db)
    replaced = take_replaced_count(records)
    frame, counts = standardise_erp(records, crm.hash_key)
    return dg.Output(frame, metadata={"dagster/row_count": len(frame), "source": erp.kind,
                                      "invalid_encoding_values": replaced, **counts})


IDENTITY = dg.AssetKey([WAREHOUSE, "customer_identity_map"])
MERGES = dg.AssetKey([WAREHOUSE, "identity_merges"])


PARTITION_SQL = "SELECT * FROM {table} WHERE week_start = @week_start"
# Only when the week before was not loaded (the first week, a gap, a backfill older than every loaded week).
NEAREST_SQL = """
SELECT COALESCE(MAX(CASE WHEN week_start < @week_start THEN week_start END), MAX(week_start)) AS week_start
FROM {table} WHERE week_start <> @week_start
"""


def prior_identity(warehouse: WarehouseSQL, week_start: datetime) -> tuple[pd.DataFrame, datetime | None]:
    """The identity to carry into the week, and its week: the week before's, else the latest loaded week before
    this one, else (a backfill older than every loaded week) the newest loaded week, so a person keeps the id
    the loaded weeks gave it; empty on the first week. Read from the warehouse, whatever Dagster instance runs
    the week; on a normal Monday one partition is read."""
    if not warehouse.exists(*IDENTITY.path):
        return pd.DataFrame(columns=IDENTITY_COLUMNS), None
    table = warehouse.table(*IDENTITY.path)
    week = week_start - timedelta(days=7)
    rows = warehouse.query(PARTITION_SQL, {"week_start": week}, table=table)
    if rows.empty:
        found = warehouse.query(NEAREST_SQL, {"week_start": week_start}, table=table)["week_start"].iloc[0]
        if pd.isna(found):
            return pd.DataFrame(columns=IDENTITY_COLUMNS), None
        week = pd.Timestamp(found).to_pydatetime().replace(tzinfo=None)
        rows = warehouse.query(PARTITION_SQL, {"week_start": week}, table=table)
    return rows.reindex(columns=IDENTITY_COLUMNS), week


@dg.multi_asset(
    name="customer_analytics__customer_identity_map",  # the step key it had as a single asset
    outs={
        "customer_identity_map": dg.AssetOut(
            key=IDENTITY, kinds={"pandas", WAREHOUSE_KIND}, owners=OWNERS, io_manager_key="warehouse_io_manager",
            dagster_type=CustomerIdentityMapType, is_required=False,
            metadata={"partition_expr": "week_start", "dagster/column_schema": column_schema(CustomerIdentityMap)},
            description="`customer_analytics.customer_identity_map`: every record of the CRM, the ERP and the "
                        "transaction database known as of the week, with the person it belongs to. Records sharing "
                        "a keyed email hash, a keyed phone hash or an id are one person; a person keeps its id "
                        "for good (carried from the week before); `matched_on` says what linked each record."),
        "identity_merges": dg.AssetOut(
            key=MERGES, kinds={"pandas", WAREHOUSE_KIND}, owners=OWNERS, io_manager_key="warehouse_io_manager",
            dagster_type=IdentityMergesType, is_required=False,
            metadata={"partition_expr": "week_start", "dagster/column_schema": column_schema(IdentityMerges)},
            description="`customer_analytics.identity_merges`: the persons the week's records showed to be one "
                        "with another, each with the id it merged into (the person of the best record: CRM "
                        "before ERP before database, then the most recent). dim_customers and the facts follow "
                        "a merge in the same run."),
    },
    ins={"crm_customers": intermediate("crm_customers"), "erp_customers": intermediate("erp_customers"),
         "transformed_transactions": intermediate("transformed_transactions", StoredFrame)},
    deps=[dg.AssetDep(IDENTITY, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
    partitions_def=PARTITIONS, group_name="profiles", can_subset=True,
)
def customer_identity_map(context: dg.AssetExecutionContext, warehouse: WarehouseSQL, crm: CrmSource, crm_customers,
                          erp_customers, transformed_transactions):
    """The week's identity, carried from the week before (see the outputs' descriptions)."""
    if finished_week(context, crm_customers, erp_customers, transformed_transactions):
        return
    database_ids = transformed_transactions.read(["customer_id"])["customer_id"]
    # Forgotten on request: the CRM or the ERP may still know them (the extract already left them out).
    crm_customers, crm_suppressed = drop_suppressed(crm_customers, warehouse, crm.hash_key)
    erp_customers, erp_suppressed = drop_suppressed(erp_customers, warehouse, crm.hash_key)
    week_start = week_context(context).week_start.replace(tzinfo=None)
    prior, prior_week = prior_identity(warehouse, week_start)
    resolution = carry_identity(prior, week_records(crm_customers, erp_customers, database_ids), week_start)
    identity, merges = resolution.identity, resolution.merges
    if resolution.counts["id_collisions"]:
        context.log.warning(f"ID_COLLISION: {resolution.counts['id_collisions']} source id(s) equal to another id "
                            "of the same source but for case are kept as customers of their own")
    for merge in merges.itertuples():
        context.log.info(f"merged {merge.retired_id} into {merge.surviving_id} (matched on {merge.matched_on})")
    week_rows = identity[identity["last_seen_week"] == week_start]
    yield from selected_events(context, [
        dg.Output(identity.assign(week_start=week_start), output_name="customer_identity_map", metadata={
            "dagster/row_count": len(identity), **resolution.counts,
            "carried_from": f"{prior_week:%Y-%m-%d}" if prior_week else "nothing (first week)",
            "suppressed_records": crm_suppressed + erp_suppressed,
            "matched_on": dg.MetadataValue.json(week_rows["matched_on"].value_counts().to_dict()),
            "sources": dg.MetadataValue.json(week_rows["source"].value_counts().to_dict())}),
        dg.Output(merges.assign(week_start=week_start), output_name="identity_merges",
                  metadata={"dagster/row_count": len(merges)}),
    ])
