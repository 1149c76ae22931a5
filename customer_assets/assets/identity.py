"""One real customer across sources and weeks: the ERP's records of the week, and the carried
identity over the CRM, the ERP and the database (``logic/resolution.py``).

The carried identity stays in the warehouse: a week reads only the carried records its own can
reach (``sql/identity.py``), resolves those, and hands the load a ``CarriedWeek``, which copies the
other records inside the warehouse. Its cost follows the week's records, not every customer ever
known."""

from datetime import datetime

import dagster as dg
import pandas as pd
import pyarrow.compute as pc

from customer_assets import tables
from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WEEK_WIDE,
    finished_week,
    intermediate,
    optional_out,
    selected_events,
    week_context,
)
from customer_assets.assets.week_order import after_previous_week
from customer_assets.dagster_types import (
    CustomerIdentityMapType,
    ErpCustomersType,
    IdentityMergesType,
    column_schema,
)
from customer_assets.erasure import drop_suppressed
from customer_assets.frames import CarriedWeek, StoredFrame
from customer_assets.logic.identity import distinct_ids, standardise_ids
from customer_assets.logic.person_naming import final_survivors, follow
from customer_assets.logic.resolution import IDENTITY_COLUMNS, Resolution, carry_handed_over
from customer_assets.logic.source_records import RECORD, standardise_erp, week_records
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import CustomerIdentityMap, IdentityMerges
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import take_replaced_count
from customer_assets.sources.customers_and_products import known_customers
from customer_assets.sql import identity as carried_sql
from customer_assets.suppression import holds_customer_ids
from customer_assets.weeks import WeekContext


@dg.asset(
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    dagster_type=ErpCustomersType,
)
def erp_customers(
    context: dg.AssetExecutionContext, erp: ErpSource, pii: PiiKey, source_db: PostgresSource
) -> dg.Output:
    """ERP customer records modified in the week (incremental by modification time), standardised;
    email and phone only as keyed HMAC-SHA256 (the PII key). Without an ERP (ERP_DB_HOST unset)
    the week has none."""
    span = week_context(context)
    if erp.kind == "none":
        context.log.info(
            "No ERP configured (ERP_DB_HOST unset): "
            "identity resolution uses the CRM and the database."
        )
    records = erp.fetch_week(span.week_start, span.week_end, source_db)
    replaced = take_replaced_count(records)
    frame, counts = standardise_erp(records, pii.hash_key)
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "source": erp.kind,
            "invalid_encoding_values": replaced,
            **counts,
        },
    )


IDENTITY = tables.key(tables.CUSTOMER_IDENTITY_MAP)
# What the identity reads of the CRM's and the ERP's records (``week_records``)
SOURCE_RECORD_COLUMNS = ["customer_id", "email_hash", "phone_hash", "updated_at"]
MERGES = tables.key(tables.IDENTITY_MERGES)

# Which weeks are loaded, when the Dagster instance does not know (a new instance on an old
# warehouse).
LOADED_SQL = """
SELECT MAX(week_start) AS latest, MAX(CASE WHEN week_start < @week_start THEN week_start END) AS before
FROM {table} WHERE week_start <> @week_start
"""
MERGES_SQL = (
    "SELECT retired_id, surviving_id, week_start FROM {table} WHERE week_start <> @week_start"
)


def _carried_week(
    context: dg.AssetExecutionContext, warehouse: WarehouseSQL, week_start: datetime
) -> datetime | None:
    """The loaded week whose identity the week carries: the newest loaded week when a later one
    than this is loaded (a backfill or a re-run of an older week gives the ids the loaded weeks
    use), else the latest before it; None on the first week. Asked of the Dagster instance, else of
    the warehouse."""
    known = sorted(
        WeekContext.of(w).week_start.replace(tzinfo=None)
        for w in context.instance.get_materialized_partitions(IDENTITY) - {context.partition_key}
    )
    if known:
        latest, before = known[-1], max((w for w in known if w < week_start), default=None)
    else:
        row = warehouse.query(
            LOADED_SQL, {"week_start": week_start}, table=warehouse.table(*IDENTITY.path)
        ).iloc[0]
        latest, before = (
            None if pd.isna(row[c]) else pd.Timestamp(row[c]).to_pydatetime()
            for c in ("latest", "before")
        )
    return latest if latest is not None and latest > week_start else before


def carried_partition(
    context: dg.AssetExecutionContext, warehouse: WarehouseSQL, week_start: datetime
) -> carried_sql.CarriedPartition | None:
    """The identity partition the week carries (``_carried_week``'s), or None: the first week, or
    a partition written before the identity was carried (the week starts afresh)."""
    if not warehouse.exists(*IDENTITY.path):
        return None
    week = _carried_week(context, warehouse, week_start)
    if week is None:
        return None
    table = warehouse.table(*IDENTITY.path)
    if "first_seen_week" not in carried_sql.columns(warehouse, table, week):
        context.log.warning(
            f"customer_identity_map of {week:%Y-%m-%d} predates the carried identity: not carried"
        )
        return None
    return carried_sql.size(warehouse, table, week)


def later_merges(warehouse: WarehouseSQL, week_start: datetime) -> dict[str, str]:
    """Each person retired by a merge of another week -> its final survivor: a merge found later
    than the carried week (a backfill's) is followed too."""
    if not warehouse.exists(*MERGES.path):
        return {}
    merges = warehouse.query(
        MERGES_SQL, {"week_start": week_start}, table=warehouse.table(*MERGES.path)
    )
    return final_survivors(merges)


# A week whose records are at least this share of the carried records reads the carried partition
# whole: it reaches most of it anyway (in the benchmarks, 77% at a year's end and 99.7% at 1M rows a
# week), and one read costs less than asking round by round (at 1M rows: 0.3 s against 3.6 s). A
# week touching a small share of a long history reads only that share.
READ_WHOLE_SHARE = 0.5


def prior_identity(
    warehouse: WarehouseSQL,
    carried: carried_sql.CarriedPartition | None,
    records: pd.DataFrame,
    week_start: datetime,
) -> tuple[pd.DataFrame, pd.Series, int]:
    """What the week needs of the carried identity, read from the warehouse: the carried records
    its ``records`` reach (with every merge recorded since followed), the names that persons it
    does not reach hold that a new person could clash with, and how many persons the records read
    belonged to as carried. Nothing else of the carried identity leaves the warehouse, unless the
    week's records are ``READ_WHOLE_SHARE`` of it or more: then the partition is read whole (and
    no name is held outside what is read)."""
    if carried is None:
        return pd.DataFrame(columns=IDENTITY_COLUMNS), pd.Series([], dtype="str"), 0
    survivors = later_merges(warehouse, week_start)
    if len(records) >= READ_WHOLE_SHARE * carried.records:
        rows = carried_sql.whole(warehouse, carried)
        read_persons = carried.persons
        rows["customer_id"] = follow(rows["customer_id"], survivors)
        return rows.reindex(columns=IDENTITY_COLUMNS), pd.Series([], dtype="str"), read_persons
    # the persons merged since that the partition still holds, and those they merged into
    retired = carried_sql.held_persons(warehouse, carried, sorted(survivors))
    persons = [*retired, *(survivors[r] for r in retired)]
    rows = carried_sql.reached_records(warehouse, carried, records, persons, IDENTITY_COLUMNS)
    read_persons = len(distinct_ids(rows["customer_id"]))
    rows["customer_id"] = follow(rows["customer_id"], survivors)
    used = carried_sql.names_in_use(
        warehouse, carried, pd.concat([rows[RECORD], records[RECORD]], ignore_index=True)
    )
    return rows.reindex(columns=IDENTITY_COLUMNS), used, read_persons


def known_event_ids(
    source_db: PostgresSource, events: pd.DataFrame, database_ids: pd.Series
) -> pd.Series:
    """The ids of the week's event aggregates the shop's customers table holds that no transaction
    of the week names: customers seen only in events are records of the shop as well (as the shop
    spells their ids)."""
    # Arrow's hash lookups: pandas' Index.difference took 0.44 s on a 1M-row week's ids, this 0.28
    candidates = distinct_ids(standardise_ids(events["customer_id"]), sort=True)
    ids = candidates.filter(
        pc.invert(pc.is_in(candidates, value_set=distinct_ids(standardise_ids(database_ids))))
    )
    if len(ids) == 0:
        return pd.Series([], dtype="str")
    with source_db.connect() as conn:
        known = known_customers(conn, source_db.schema(conn, ("customers",)), ids.to_pylist())
    take_replaced_count(known)
    return standardise_ids(known["customer_id"]).dropna()


def week_database_ids(
    source_db: PostgresSource, validated_transactions: StoredFrame, events: pd.DataFrame
) -> pd.Series:
    """The database's ids of the week: those its transactions name, then those only its event
    aggregates name that the shop's customers table holds (``known_event_ids``)."""
    database_ids = validated_transactions.read(["customer_id"])["customer_id"]
    known = known_event_ids(source_db, events, database_ids)
    return pd.concat([database_ids.astype("str"), known], ignore_index=True)


def without_erased(
    crm_customers: pd.DataFrame, erp_customers: pd.DataFrame, warehouse: WarehouseSQL, hash_key: str
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The CRM's and the ERP's records without the customers forgotten on request, and how many
    records were left out: the CRM or the ERP may still know them (the extract already left them
    out). The ERP's ids are of its own namespace: matched as erp:<id>."""
    crm_customers, crm_suppressed = drop_suppressed(crm_customers, warehouse, hash_key)
    erp_keep, erp_suppressed = drop_suppressed(
        erp_customers.assign(customer_id="erp:" + erp_customers["customer_id"]),
        warehouse,
        hash_key,
    )
    erp_customers = erp_keep.assign(customer_id=erp_keep["customer_id"].str.removeprefix("erp:"))
    return crm_customers, erp_customers, crm_suppressed + erp_suppressed


def log_resolution(context: dg.AssetExecutionContext, counts: dict, merged: int) -> None:
    """Logs the week's id collisions and merges: counts only, since the run's log is not reached by
    erasure."""
    if counts["id_collisions"]:
        context.log.warning(
            f"ID_COLLISION: {counts['id_collisions']} source id(s) of the week equal to "
            "another id of the same source but for case are kept as customers of their own"
        )
    if merged:
        context.log.info(f"{merged} person(s) merged into another this week: see identity_merges")


def _identity_output(
    resolution: Resolution,
    records_read: int,
    carried: carried_sql.CarriedPartition | None,
    read_persons: int,
    week_start: datetime,
    suppressed: int,
    waited: dict,
) -> tuple[dg.Output, dict]:
    """The identity map's output, a ``CarriedWeek`` (the ``records_read`` of the carried partition
    and the week's, resolved; the others are copied in the warehouse), and the whole's counts."""
    identity = resolution.identity
    counts = {
        **resolution.counts,
        "records": len(identity) + (carried.records - records_read if carried else 0),
        "persons": resolution.counts["persons"]
        + (carried.persons - read_persons if carried else 0),
        "records_read": records_read,
    }
    week_rows = identity[identity["last_seen_week"] == week_start]
    output = dg.Output(
        CarriedWeek(
            identity.assign(week_start=week_start),
            # every carried record read (the partition whole) is in the identity: none to copy
            carried.week if carried and records_read < carried.records else None,
            RECORD,
        ),
        output_name=tables.CUSTOMER_IDENTITY_MAP,
        metadata={
            "dagster/row_count": counts["records"],
            **counts,
            "carried_from": f"{carried.week:%Y-%m-%d}" if carried else "nothing (first week)",
            "suppressed_records": suppressed,
            **waited,
            "matched_on": dg.MetadataValue.json(week_rows["matched_on"].value_counts().to_dict()),
            "sources": dg.MetadataValue.json(week_rows["source"].value_counts().to_dict()),
        },
    )
    return output, counts


def _weekly_table(
    key: dg.AssetKey, dagster_type, model, id_columns: tuple[str, ...], description: str
) -> dg.AssetOut:
    """An output of the identity step: a warehouse table replaced with its week, ``id_columns``
    holding ids of customers and persons."""
    return optional_out(
        key=key,
        kinds={"pandas"},
        io_manager_key="warehouse_io_manager",
        dagster_type=dagster_type,
        description=description,
        tags=holds_customer_ids(*id_columns),
        metadata={"partition_expr": "week_start", "dagster/column_schema": column_schema(model)},
    )


@dg.multi_asset(
    op_tags=WEEK_WIDE,
    name=IDENTITY.to_python_identifier(),  # the step key it had as a single asset
    outs={
        tables.CUSTOMER_IDENTITY_MAP: _weekly_table(
            IDENTITY,
            CustomerIdentityMapType,
            CustomerIdentityMap,
            ("customer_id", "source_customer_id"),
            "`customer_analytics.customer_identity_map`: every record of the CRM, the ERP and the "
            "transaction database known as of the week, with the person it belongs to. Records "
            "sharing a keyed email hash, a keyed phone hash or an id are one person; a person "
            "keeps its id for good (carried from the week before); `matched_on` says what linked "
            "each record.",
        ),
        tables.IDENTITY_MERGES: _weekly_table(
            MERGES,
            IdentityMergesType,
            IdentityMerges,
            ("retired_id", "surviving_id"),
            "`customer_analytics.identity_merges`: the persons the week's records showed to be one "
            "with another, each with the id it merged into (the person of the best record: CRM "
            "before ERP before database, then the most recent). dim_customers and the facts follow "
            "a merge in the same run.",
        ),
    },
    ins={
        "crm_customers": intermediate("crm_customers", StoredFrame),
        "erp_customers": intermediate("erp_customers", StoredFrame),
        "customer_event_aggregates": intermediate("customer_event_aggregates", StoredFrame),
        "validated_transactions": intermediate("validated_transactions", StoredFrame),
    },
    partitions_def=PARTITIONS,
    group_name="profiles",
    can_subset=True,
)
def customer_identity_map(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseSQL,
    pii: PiiKey,
    source_db: PostgresSource,
    settings: PipelineSettings,
    crm_customers,
    erp_customers,
    customer_event_aggregates,
    validated_transactions,
):
    """The week's identity, carried from the week before (see the outputs' descriptions). It needs
    only the ids the week's validated transactions name, so it runs beside the customer history and
    the transform rather than after them; weeks run at once keep their order, as the history does:
    it first waits for a started run of the week before (``week_order.py``)."""
    if finished_week(
        context, crm_customers, erp_customers, customer_event_aggregates, validated_transactions
    ):
        return
    waited = after_previous_week(context, settings.previous_week_wait_seconds)
    # read once the wait is over, and only what the records are made of: a week waiting for the
    # week before holds no frame
    database_ids = week_database_ids(
        source_db, validated_transactions, customer_event_aggregates.read(["customer_id"])
    )
    crm_customers, erp_customers, suppressed = without_erased(
        crm_customers.read(SOURCE_RECORD_COLUMNS),
        erp_customers.read(SOURCE_RECORD_COLUMNS),
        warehouse,
        pii.hash_key,
    )
    week_start = week_context(context).week_start.replace(tzinfo=None)
    records = week_records(crm_customers, erp_customers, database_ids)
    del crm_customers, erp_customers, database_ids  # copied into the records: not held further
    carried = carried_partition(context, warehouse, week_start)
    prior, used, read_persons = prior_identity(warehouse, carried, records, week_start)
    records_read, handed = len(prior), {"prior": prior, "records": records}
    del prior, records  # handed over: the carry lets them go once it has copied them
    resolution = carry_handed_over(handed, week_start, also_used=used)
    output, counts = _identity_output(
        resolution, records_read, carried, read_persons, week_start, suppressed, waited
    )
    merges = resolution.merges
    log_resolution(context, counts, len(merges))
    yield from selected_events(
        context,
        [
            output,
            dg.Output(
                merges.assign(week_start=week_start),
                output_name=tables.IDENTITY_MERGES,
                metadata={"dagster/row_count": len(merges)},
            ),
        ],
    )
