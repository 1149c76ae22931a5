"""The week's quarantined and flagged transactions as warehouse tables keyed by week.

Replaced with the week on a re-run, covered by erasure (they hold customer ids), and queryable next
to the loaded rows, so that no customer-level file has to stay on disk for anyone to see why a row
was held back: the report files of a finished week hold counts only.
"""

import dagster as dg
import pandas as pd

from customer_assets.assets.common import (
    OWNERS,
    PARTITIONS,
    WAREHOUSE,
    finished_week,
    intermediate,
    week_context,
)
from customer_assets.dagster_types import column_schema
from customer_assets.schemas import QuarantinedTransactions, TransactionAnomalies
from customer_assets.suppression import holds_customer_ids

WEEK_COLUMN = dg.TableColumn(
    name="week_start", type="datetime64[ns]", description="The week (its Monday, UTC)."
)


def _schema(model) -> dg.TableSchema:
    return dg.TableSchema(columns=[*column_schema(model).columns, WEEK_COLUMN])


def _week_rows(context: dg.AssetExecutionContext, rows: pd.DataFrame):
    if finished_week(context, rows):
        return
    week_start = pd.Timestamp(week_context(context).week_start).tz_convert(None)
    yield dg.Output(rows.assign(week_start=week_start), metadata={"dagster/row_count": len(rows)})


TABLE = {
    "key_prefix": [WAREHOUSE],
    "partitions_def": PARTITIONS,
    "group_name": "quality",
    "owners": OWNERS,
    "kinds": {"pandas"},
    "io_manager_key": "warehouse_io_manager",
    "output_required": False,
    "tags": holds_customer_ids(),
}


@dg.asset(
    ins={"quarantined_transactions": intermediate("quarantined_transactions")},
    metadata={
        "partition_expr": "week_start",
        "dagster/column_schema": _schema(QuarantinedTransactions),
    },
    **TABLE,
)
def transaction_quarantine(context: dg.AssetExecutionContext, quarantined_transactions):
    """`customer_analytics.transaction_quarantine`: the week's quarantined transactions with every
    reason code (`reason_codes`, `primary_reason`), as the extract read them (never email, phone or
    address)."""
    yield from _week_rows(context, quarantined_transactions)


@dg.asset(
    ins={"transaction_anomalies": intermediate("transaction_anomalies")},
    metadata={
        "partition_expr": "week_start",
        "dagster/column_schema": _schema(TransactionAnomalies),
    },
    **TABLE,
)
def flagged_transactions(context: dg.AssetExecutionContext, transaction_anomalies):
    """`customer_analytics.flagged_transactions`: the week's validated transactions that an anomaly
    rule flagged (`anomaly_flags`); they are loaded too, this table says why they stand out."""
    yield from _week_rows(context, transaction_anomalies)
