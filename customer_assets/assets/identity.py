"""One customer across sources: the ERP's records of the week, and the identity map over CRM, ERP and database."""

import dagster as dg

from customer_assets.assets.common import (
    ETL, OWNERS, PARTITIONS, WAREHOUSE, WAREHOUSE_KIND, finished_week, intermediate, week_context)
from customer_assets.assets.profiles import AFTER_TRANSACTIONS
from customer_assets.erasure import drop_suppressed
from customer_assets.io_managers.frames import StoredFrame
from customer_assets.io_managers.types import CustomerIdentityMapType, ErpCustomersType, column_schema
from customer_assets.logic.resolution import resolve, standardise_erp
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import CustomerIdentityMap
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


@dg.asset(key_prefix=[WAREHOUSE], partitions_def=PARTITIONS, group_name="profiles",
          kinds={"pandas", WAREHOUSE_KIND}, owners=OWNERS, io_manager_key="warehouse_io_manager",
          dagster_type=CustomerIdentityMapType, output_required=False,
          ins={"crm_customers": intermediate("crm_customers"), "erp_customers": intermediate("erp_customers"),
               "transformed_transactions": intermediate("transformed_transactions", StoredFrame)},
          metadata={"partition_expr": "week_start", "dagster/column_schema": column_schema(CustomerIdentityMap)})
def customer_identity_map(context: dg.AssetExecutionContext, warehouse: WarehouseSQL, crm: CrmSource, crm_customers,
                          erp_customers, transformed_transactions):
    """`customer_analytics.customer_identity_map`: the week's records of the CRM, the ERP and the transaction
    database, each with the customer it resolves to. Records sharing a keyed email hash, a keyed phone hash or a
    standardised id are one customer, whose id is its best record's (CRM > ERP > database, then the most
    recent); `matched_on` says what linked each record."""
    if finished_week(context, crm_customers, erp_customers, transformed_transactions):
        return
    database_ids = transformed_transactions.read(["customer_id"])["customer_id"]
    # Forgotten on request: the CRM or the ERP may still know them (the extract already left them out).
    crm_customers, crm_suppressed = drop_suppressed(crm_customers, warehouse, crm.hash_key)
    erp_customers, erp_suppressed = drop_suppressed(erp_customers, warehouse, crm.hash_key)
    mapping = resolve(crm_customers, erp_customers, database_ids)
    mapping["week_start"] = week_context(context).week_start.replace(tzinfo=None)
    merged = mapping[~mapping["is_primary"]]
    yield dg.Output(mapping, metadata={
        "dagster/row_count": len(mapping), "customers": int(mapping["customer_id"].nunique()),
        "records_merged": len(merged), "suppressed_records": crm_suppressed + erp_suppressed,
        "matched_on": dg.MetadataValue.json(merged["matched_on"].value_counts().to_dict()),
        "sources": dg.MetadataValue.json(mapping["source"].value_counts().to_dict())})
