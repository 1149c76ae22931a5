"""Unified customer profiles: CRM + behavioural events + the week's transactions, and an SCD2 dimension."""

import json
from datetime import date, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WAREHOUSE,
    check_result,
    check_spec,
    finished_week,
    intermediate,
    selected_events,
    week_context,
)
from customer_assets.assets.kafka import KAFKA_EVENTS
from customer_assets.dagster_types import (
    CrmCustomersType,
    CustomerEventAggregatesType,
    UnifiedCustomerProfilesType,
    column_schema,
)
from customer_assets.erasure import drop_suppressed
from customer_assets.frames import StoredFrame, query_stored
from customer_assets.logic import checks
from customer_assets.logic.crm import standardise_crm
from customer_assets.logic.identity import distinct_ids, is_in, standardise_ids
from customer_assets.logic.profiles import (
    ENGAGEMENT_FORMULA,
    ENGAGEMENT_WEIGHTS,
    build_profiles,
    events_per_person,
    to_persons,
    transaction_aggregates,
    transaction_aggregates_sql,
    transactions_per_person,
)
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import PROFILE_REQUIRED, UnifiedCustomerProfiles
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import take_replaced_count
from customer_assets.sources.customers_and_products import known_customers
from customer_assets.sources.event_parse import EVENTS_SCHEMA
from customer_assets.sources.events import MalformedEventsError, aggregate, read_week
from customer_assets.sources.landing_zone import day_folders
from customer_assets.sql.merges import ADD_MERGED_INTO_SQL, follow_merges
from customer_assets.sql.scd2 import apply_week
from customer_assets.suppression import holds_customer_ids

PROFILES = dg.AssetKey([ETL, "unified_customer_profiles"])
CRM = dg.AssetKey([ETL, "crm_customers"])
EVENTS = dg.AssetKey([ETL, "customer_event_aggregates"])
# What seed 001 asks of each CRM customer ("all required fields present"): phone and updated_at are not among them.
CRM_REQUIRED_FIELDS = (
    "customer_id",
    "email",
    "signup_date",
    "last_activity_date",
    "subscription_tier",
    "lifetime_value",
    "support_ticket_count",
)


# The profile branch's inputs run after the transaction branch's steps: a slow or unavailable CRM or landing
# zone never delays (or, failing, prevents) the week's transactions.
AFTER_TRANSACTIONS = {"dagster/priority": "-1"}


@dg.asset(
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"api", "pandas"},
    owners=OWNERS,
    dagster_type=CrmCustomersType,
    op_tags=AFTER_TRANSACTIONS,
    check_specs=[
        check_spec(
            "crm_min_records",
            CRM,
            description="Warns when the week's CRM extract holds fewer than "
            "CRM_MIN_RECORDS records (default 100).",
        ),
        check_spec(
            "crm_required_fields",
            CRM,
            description="Warns when CRM records lack a required field: "
            + ", ".join(CRM_REQUIRED_FIELDS)
            + ".",
        ),
    ],
)
def crm_customers(
    context: dg.AssetExecutionContext,
    crm: CrmSource,
    source_db: PostgresSource,
    settings: PipelineSettings,
):
    """CRM customers updated in the week (all pages), standardised, emails and phones as keyed HMAC-SHA256.

    From the CRM REST API when `CRM_API_URL` is set (100 requests a minute, backoff on 429, smaller pages on
    timeouts); on the embedded demo, from its `crm_customers` table. Without a CRM the week has no CRM
    records (metadata `source: none`) and profiles come from the other sources. A page that fails for good
    is skipped and recorded, and the materialization is marked `partial`. Warning checks: fewer records
    than CRM_MIN_RECORDS, records without a required field.
    """
    ctx = week_context(context)
    if crm.kind == "none":
        context.log.info(
            "No CRM configured (CRM_API_URL unset): the week's profiles use the database and events."
        )
    extract = crm.fetch_week(ctx.week_start, ctx.week_end, source_db)
    frame, counts = standardise_crm(extract.frame(), crm.hash_key)
    if extract.partial:
        context.log.warning(
            f"CRM extract is partial: {len(extract.missing_pages)} page(s) lost: "
            f"{extract.missing_pages}"
        )
    yield dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "source": crm.kind,
            "partial": extract.partial,
            "invalid_encoding_values": extract.invalid_encoding_values,
            "extract": dg.MetadataValue.json(extract.summary()),
            **counts,
        },
    )
    # Records dropped for want of an id are records without a required field too.
    missing = {**extract.missing_fields, "customer_id": extract.malformed_records}
    received = counts["records"] + extract.malformed_records
    yield check_result(
        CRM,
        "crm_min_records",
        checks.crm_min_records(len(frame), settings.crm_min_records, crm.kind),
        records=len(frame),
        minimum=settings.crm_min_records,
    )
    yield check_result(
        CRM,
        "crm_required_fields",
        checks.crm_required_fields(missing, received, CRM_REQUIRED_FIELDS),
        missing=dg.MetadataValue.json({k: v for k, v in missing.items() if v}),
    )


@dg.asset(
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"json", "pandas"},
    owners=OWNERS,
    dagster_type=CustomerEventAggregatesType,
    op_tags=AFTER_TRANSACTIONS,
    deps=[
        KAFKA_EVENTS
    ],  # reads the files the Kafka consumer landed (it does nothing without Kafka)
    check_specs=[
        check_spec(
            "events_cover_week",
            EVENTS,
            description="Warns when the landing zone has no event file "
            "for a day of the week, or no event in the week.",
        )
    ],
)
def customer_event_aggregates(context: dg.AssetExecutionContext, settings: PipelineSettings):
    """Per customer, the week's page views, distinct features used, purchases (count, USD) and support chats.

    Read from the landing zone `EVENTS_PATH/dt=YYYY-MM-DD/*.jsonl` (or `.jsonl.gz`); aliases map other event
    names; malformed lines are counted, the first ten logged with file and line, and skipped; above
    EVENTS_MAX_MALFORMED_SHARE (5%) of the week's lines the week stops; other compressed files are skipped and
    listed; events outside the week are ignored. A warning check names the days of the week without an
    event file (a feed that fell silent).
    """
    ctx = week_context(context)
    if settings.events_path is None:
        context.log.info(
            "No event landing zone configured (EVENTS_PATH unset): the week has no events."
        )
        frame = aggregate(EVENTS_SCHEMA.empty_table())
        yield dg.Output(frame, metadata={"dagster/row_count": 0, "source": "none", "events": 0})
        yield check_result(
            EVENTS, "events_cover_week", checks.events_cover_week([], set(), 0, None)
        )
        return
    root = Path(settings.events_path)
    if not root.is_dir():
        raise dg.Failure(
            description=f"EVENTS_PATH={root} is configured but is not a readable directory; "
            "unset EVENTS_PATH to run the week without events.",
            allow_retries=False,
        )
    try:
        events, scan = read_week(
            root,
            ctx.week_start,
            ctx.week_end,
            settings.event_aliases(),
            log=context.log,
            max_malformed_share=settings.events_max_malformed_share,
        )
    except MalformedEventsError as exc:
        raise dg.Failure(
            description=str(exc),
            allow_retries=False,
            metadata={"scan": dg.MetadataValue.json(exc.scan.summary())} if exc.scan else None,
        ) from exc
    frame = aggregate(events)
    yield dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "source": "landing_zone",
            "events": len(events),
            "malformed_lines": scan.malformed_lines,
            "malformed_examples": dg.MetadataValue.json(scan.malformed[:20]),
            "skipped_files": dg.MetadataValue.json(scan.skipped_files),
            "scan": dg.MetadataValue.json(scan.summary()),
        },
    )
    days = [ctx.week_start.date() + timedelta(days=i) for i in range(7)]
    with_files = _days_with_files(root, ctx.week_start, ctx.week_end)
    yield check_result(
        EVENTS,
        "events_cover_week",
        checks.events_cover_week(days, with_files, len(events), str(root)),
        events=len(events),
        days_without_files=len([d for d in days if d not in with_files]),
    )


def _days_with_files(root: Path, start: datetime, end: datetime) -> set[date]:
    """The days whose folder of the landing zone holds a file with data (an empty file is a silent day)."""
    return {
        date.fromisoformat(folder.name.removeprefix("dt="))
        for folder in day_folders(root, start, end)
        if any(path.is_file() and path.stat().st_size > 0 for path in folder.iterdir())
    }


def week_sources(crm_kind: str, events_path: str | None) -> list[str]:
    """Which sources fed a week's profiles: the database always; the CRM and the events when configured."""
    crm = {"api": ["crm_api"], "demo_table": ["crm_demo_table"]}.get(crm_kind, [])
    return ["database", *crm, *(["events"] if events_path else [])]


def _known_customers(source_db: PostgresSource, ids: list[str]) -> tuple[pd.DataFrame, int]:
    """The database's customers among ``ids``, as profile records of the source "database", and how many of
    their values were not UTF-8 (kept with U+FFFD)."""
    with source_db.connect() as conn:
        known = known_customers(conn, source_db.schema(conn, ("customers",)), ids)
    replaced = take_replaced_count(known)
    known["customer_id"] = standardise_ids(known["customer_id"])
    return known.assign(updated_at=known["signup_date"], source="database"), replaced


PROFILES_DESCRIPTION = """One profile per person seen this week (CRM or ERP update, events or transactions).

Every source's id is replaced by its person's (`customer_identity_map`); each field comes from the CRM before
the ERP before the database, then the most recent record. Engagement score 0-100, days since last activity, status active (< 7 days) / at-risk
(7-30) / churned (> 30), value tier Platinum / Gold / Silver / Bronze, min-max features `feature_*`.
Impossible values are removed, missing ones imputed with the median and flagged, outliers above the 99th
percentile kept true and flagged (`outlier_fields`); every decision is in `transform_log.json`.
"""


@dg.multi_asset(
    name="etl__unified_customer_profiles",  # the step key it had as a single asset (logs, failure records)
    outs={
        "unified_customer_profiles": dg.AssetOut(
            key=PROFILES,
            kinds={"pandas"},
            owners=OWNERS,
            is_required=False,
            dagster_type=UnifiedCustomerProfilesType,
            description=PROFILES_DESCRIPTION,
        )
    },
    partitions_def=PARTITIONS,
    group_name="profiles",
    ins={
        "crm_customers": intermediate("crm_customers"),
        "erp_customers": intermediate("erp_customers"),
        "customer_event_aggregates": intermediate("customer_event_aggregates"),
        "transformed_transactions": intermediate("transformed_transactions", StoredFrame),
        "customer_identity_map": dg.AssetIn(key=tables.key(tables.CUSTOMER_IDENTITY_MAP)),
    },
    # Subsettable so that a step with nothing to do (its week finished) may yield nothing, checks included.
    can_subset=True,
    check_specs=[
        check_spec(
            "match_rate",
            PROFILES,
            blocking=True,
            description="Active customer ids that match a known customer: warn < 80%, fail < 50%.",
        ),
        check_spec(
            "required_columns_not_null",
            PROFILES,
            blocking=True,
            description="No profile has a null in a required column (after imputation).",
        ),
        check_spec(
            "engagement_score_range",
            PROFILES,
            blocking=True,
            description="Every engagement score lies in [0, 100].",
        ),
        check_spec(
            "status_distribution",
            PROFILES,
            description="Warns when every customer has the same status.",
        ),
    ],
)
def unified_customer_profiles(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    source_db: PostgresSource,
    crm: CrmSource,
    warehouse: WarehouseSQL,
    alerts: Alerts,
    crm_customers: pd.DataFrame,
    erp_customers: pd.DataFrame,
    customer_event_aggregates: pd.DataFrame,
    transformed_transactions: StoredFrame,
    customer_identity_map: pd.DataFrame,
):
    """The week's unified profiles (see PROFILES_DESCRIPTION) and their checks."""
    if finished_week(
        context, crm_customers, erp_customers, customer_event_aggregates, transformed_transactions
    ):
        return
    yield from selected_events(
        context,
        _unify_week(
            context,
            settings,
            source_db,
            crm,
            warehouse,
            alerts,
            crm_customers,
            erp_customers,
            customer_event_aggregates,
            transformed_transactions,
            customer_identity_map,
        ),
    )


def _unify_week(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    source_db: PostgresSource,
    crm: CrmSource,
    warehouse: WarehouseSQL,
    alerts: Alerts,
    crm_customers: pd.DataFrame,
    erp_customers: pd.DataFrame,
    customer_event_aggregates: pd.DataFrame,
    transformed_transactions: StoredFrame,
    identity: pd.DataFrame,
):
    ctx = week_context(context)
    # Per customer, read by DuckDB from the transform's file: the week's rows never become a DataFrame here.
    transactions = transaction_aggregates(
        query_stored(
            transformed_transactions.path,
            "transactions",
            transaction_aggregates_sql(transformed_transactions.columns),
        )
    )
    # Every source's id becomes its person's: one profile per real customer (ERP-only customers included).
    crm_records = to_persons(crm_customers, identity, ("crm",))
    erp_records = to_persons(erp_customers, identity, ("erp",))
    events = events_per_person(customer_event_aggregates, identity)
    per_person = transactions_per_person(transactions, identity)
    # The shop's record of every person seen, under each shop id they have (a CRM id may spell it otherwise).
    persons = distinct_ids(
        crm_records["customer_id"],
        erp_records["customer_id"],
        events["customer_id"],
        per_person["customer_id"],
    )
    shop_ids = identity.loc[
        (identity["source"] == "database") & is_in(identity["customer_id"], persons),
        "source_customer_id",
    ]
    # The CRM's ids name shop customers, spelled loosely: looked up as written and upper-cased too.
    ids = distinct_ids(
        shop_ids,
        customer_event_aggregates["customer_id"],
        transactions["customer_id"],
        crm_customers["customer_id"],
        crm_customers["customer_id"].str.upper(),
        sort=True,
    )
    known, known_replaced = _known_customers(source_db, ids.to_pylist())
    known = to_persons(known, identity, ("database",))
    records = pd.concat([crm_records, known, erp_records], ignore_index=True)
    profile, log = build_profiles(records, events, per_person, known["customer_id"], ctx)
    # Forgotten on request: the CRM or the events may still know them.
    profile, suppressed = drop_suppressed(profile, warehouse, crm.hash_key)
    sources = week_sources(crm.kind, settings.events_path)
    transform_log = {"week_start": context.partition_key, "sources": sources, **log.as_dict()}
    log_path = settings.week_reports_dir(context.partition_key) / "transform_log.json"
    log_path.write_text(json.dumps(transform_log, indent=2, default=str))
    yield dg.Output(
        profile,
        output_name="unified_customer_profiles",
        metadata={
            "dagster/row_count": len(profile),
            "match_rate": float(log.match_rate),
            "unmatched_ids": int(log.dropped.get("UNMATCHED_ID", 0)),
            "suppressed_customers": suppressed,
            "invalid_encoding_values": known_replaced,
            "sources": ", ".join(sources),
            "engagement_formula": ENGAGEMENT_FORMULA,
            "engagement_weights": dg.MetadataValue.json(ENGAGEMENT_WEIGHTS),
            "status": dg.MetadataValue.json(transform_log["counts"]["status"]),
            "transform_log": dg.MetadataValue.json(transform_log),
            "transform_log_path": dg.MetadataValue.path(str(log_path.resolve())),
        },
    )

    results = _profile_checks(profile, log.match_rate, log.dropped.get("UNMATCHED_ID", 0))
    alert_failed_checks(
        alerts,
        [r for r in results if r.severity == dg.AssetCheckSeverity.ERROR],
        context.partition_key,
        context.log,
    )
    yield from results


def _profile_checks(
    profile: pd.DataFrame, rate: float, unmatched: int
) -> list[dg.AssetCheckResult]:
    nulls = {c: int(profile[c].isna().sum()) for c in PROFILE_REQUIRED if c in profile}
    scores = profile["engagement_score"]
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (None, None)
    statuses = {str(k): int(v) for k, v in profile["status"].value_counts().items()}
    return [
        check_result(
            PROFILES,
            "match_rate",
            checks.match_rate(rate),
            match_rate_pct=round(100.0 * rate, 2),
            unmatched_ids=unmatched,
        ),
        check_result(
            PROFILES,
            "required_columns_not_null",
            checks.required_not_null(nulls),
            null_values=sum(nulls.values()),
            nulls=dg.MetadataValue.json({k: v for k, v in nulls.items() if v}),
        ),
        check_result(
            PROFILES,
            "engagement_score_range",
            checks.within_range("engagement score", 0, 100, low, high),
            min=low if low is not None else 0.0,
            max=high if high is not None else 0.0,
        ),
        check_result(
            PROFILES,
            "status_distribution",
            checks.several_statuses(statuses),
            statuses=len(statuses),
            status=dg.MetadataValue.json(statuses),
        ),
    ]


@dg.asset(
    key_prefix=[WAREHOUSE],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    ins={"unified_customer_profiles": intermediate("unified_customer_profiles")},
    output_required=False,
    tags=holds_customer_ids(),
    metadata={
        "partition_expr": "week_start",
        "dagster/column_schema": column_schema(UnifiedCustomerProfiles),
    },
)
def weekly_customer_profiles(
    context: dg.AssetExecutionContext,
    crm: CrmSource,
    settings: PipelineSettings,
    unified_customer_profiles: pd.DataFrame,
):
    """`customer_analytics.weekly_customer_profiles`: the week's snapshot, with `run_timestamp`,
    `source_version` and `record_count`. Re-running a week replaces only that week."""
    if finished_week(context, unified_customer_profiles):
        return
    events = "landing_zone" if settings.events_path else "none"
    yield dg.Output(
        unified_customer_profiles.assign(
            run_timestamp=pd.Timestamp(datetime.now(timezone.utc)),
            source_version=f"customer_assets {version('customer_assets')}; crm={crm.kind}; events={events}",
            record_count=len(unified_customer_profiles),
        )
    )


@dg.asset(
    key_prefix=[WAREHOUSE],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"sql"},
    owners=OWNERS,
    tags=holds_customer_ids(),
    deps=[tables.key(tables.WEEKLY_CUSTOMER_PROFILES), tables.key(tables.IDENTITY_MERGES)],
)
def dim_customers(
    context: dg.AssetExecutionContext, warehouse: WarehouseSQL
) -> dg.MaterializeResult:
    """`customer_analytics.dim_customers`, SCD type 2 per person over segment, value tier, status and country
    (effective_from, effective_to, is_current, version, merged_into).

    Maintained in the warehouse by one SQL MERGE per week: the versions of the persons the week touches
    are recomputed from their weekly snapshots and swapped in, so a week's cost does not grow with the
    number of weeks, re-running a week adds no versions, and backfilling an older week gives the same
    history as running the weeks in order. Then persons merged this week (`identity_merges`), and in every later
    loaded week, are followed: their versions end at the merge's week and name the person they merged into, and
    their facts count under it.
    """
    week_start = week_context(context).week_start
    summary = apply_week(warehouse, WAREHOUSE, week_start)
    warehouse.execute(ADD_MERGED_INTO_SQL, dim=warehouse.table(tables.SCHEMA, tables.DIM_CUSTOMERS))
    merged = follow_merges(warehouse, WAREHOUSE, week_start)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(summary["versions"]),
            "customers": int(summary["current_versions"]) - merged["versions_closed"],
            "versions_starting_this_week": int(summary["versions_starting_this_week"]),
            "current_versions": int(summary["current_versions"]) - merged["versions_closed"],
            "facts_rekeyed": int(summary.get("facts_rekeyed", 0)),
            **{f"merge_{name}": value for name, value in merged.items()},
        }
    )
