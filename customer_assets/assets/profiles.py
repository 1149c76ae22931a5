"""Unified customer profiles: CRM + behavioural events + the week's transactions, and an SCD2
dimension. The CRM and the events are read in ``profile_inputs.py``, the ERP and the carried
identity in ``identity.py``."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WAREHOUSE,
    WEEK_WIDE,
    check_result,
    check_spec,
    finished_week,
    intermediate,
    optional_out,
    selected_events,
    week_context,
)
from customer_assets.dagster_types import UnifiedCustomerProfilesType, column_schema
from customer_assets.erasure import drop_suppressed
from customer_assets.frames import StoredFrame, query_stored
from customer_assets.logic import checks
from customer_assets.logic.identity import standardise_ids
from customer_assets.logic.per_person import (
    PersonWeek,
    transaction_aggregates,
    transaction_aggregates_sql,
    week_per_person,
)
from customer_assets.logic.profile_rules import (
    ENGAGEMENT_FORMULA,
    ENGAGEMENT_WEIGHTS,
    build_profiles,
)
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.schemas import PROFILE_REQUIRED, UnifiedCustomerProfiles
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import take_replaced_count
from customer_assets.sources.customers_and_products import known_customers
from customer_assets.sql.merges import ADD_MERGED_INTO_SQL, follow_merges
from customer_assets.sql.scd2 import apply_week
from customer_assets.suppression import holds_customer_ids

PROFILES = dg.AssetKey([ETL, "unified_customer_profiles"])


def week_sources(crm_kind: str, events_path: str | None) -> list[str]:
    """Which sources fed a week's profiles: the database always; the CRM and the events when
    configured."""
    crm = {"api": ["crm_api"], "demo_table": ["crm_demo_table"]}.get(crm_kind, [])
    return ["database", *crm, *(["events"] if events_path else [])]


def _known_customers(source_db: PostgresSource, ids: list[str]) -> tuple[pd.DataFrame, int]:
    """The database's customers among ``ids``, as profile records of the source "database", and how
    many of their values were not UTF-8 (kept with U+FFFD)."""
    with source_db.connect() as conn:
        known = known_customers(conn, source_db.schema(conn, ("customers",)), ids)
    replaced = take_replaced_count(known)
    known["customer_id"] = standardise_ids(known["customer_id"])
    return known.assign(updated_at=known["signup_date"], source="database"), replaced


PROFILES_DESCRIPTION = """One profile per person seen this week (CRM or ERP update, events or
transactions).

Every source's id is replaced by its person's (`customer_identity_map`); each field comes from the
CRM before the ERP before the database, then the most recent record. Engagement score 0-100, days
since last activity, status active (< 7 days) / at-risk (7-30) / churned (> 30), value tier
Platinum / Gold / Silver / Bronze, min-max features `feature_*`. Impossible values are removed,
missing ones imputed with the median and flagged, outliers above the 99th percentile kept true and
flagged (`outlier_fields`); every decision is in `transform_log.json`.
"""


@dg.multi_asset(
    op_tags=WEEK_WIDE,
    # The step key it had as a single asset (logs, failure records).
    name="etl__unified_customer_profiles",
    outs={
        "unified_customer_profiles": optional_out(
            key=PROFILES,
            kinds={"pandas"},
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
        # what names each record's person, no more: every customer's hashes and times stay in the
        # warehouse
        "customer_identity_map": dg.AssetIn(
            key=tables.key(tables.CUSTOMER_IDENTITY_MAP),
            metadata={"columns": ["customer_id", "source", "source_customer_id"]},
        ),
    },
    # Subsettable so that a step with nothing to do (its week finished) may yield nothing, checks
    # included.
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
    pii: PiiKey,
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
    inputs = WeekInputs(
        crm_customers,
        erp_customers,
        customer_event_aggregates,
        transformed_transactions,
        customer_identity_map,
    )
    profile, log, known_replaced = _week_profiles(context, source_db, inputs)
    # Forgotten on request: the CRM or the events may still know them.
    profile, suppressed = drop_suppressed(profile, warehouse, pii.hash_key)
    sources = week_sources(crm.kind, settings.events_path)
    yield from selected_events(
        context,
        _profile_events(
            context, settings, alerts, profile, log, sources, suppressed, known_replaced
        ),
    )


@dataclass(frozen=True)
class WeekInputs:
    """What the week's profiles are built from: every source's records, and the identity that
    names their persons."""

    crm_customers: pd.DataFrame
    erp_customers: pd.DataFrame
    customer_event_aggregates: pd.DataFrame
    transformed_transactions: StoredFrame
    identity: pd.DataFrame


def _profile_events(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    alerts: Alerts,
    profile: pd.DataFrame,
    log,
    sources: list[str],
    suppressed: int,
    known_replaced: int,
):
    """The profiles' output; their transform log, written beside the week's reports; their checks,
    a failed blocking one alerted."""
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


def _week_profiles(
    context: dg.AssetExecutionContext, source_db: PostgresSource, inputs: WeekInputs
):
    """The week's profiles from every source's records under their person's id, the transform's
    log (``TransformLog``), and how many of the database's values were not UTF-8."""
    replaced = 0

    def known_of(ids: list[str]) -> pd.DataFrame:
        nonlocal replaced
        known, count = _known_customers(source_db, ids)
        replaced += count
        return known

    week = _week_per_person(inputs, known_of)
    profile, log = build_profiles(
        week.records, week.events, week.transactions, week.known_ids, week_context(context)
    )
    return profile, log, replaced


def _week_per_person(
    inputs: WeekInputs, known_of: Callable[[list[str]], pd.DataFrame]
) -> PersonWeek:
    """``week_per_person`` over the week's inputs; the transactions per customer read by DuckDB
    from the transform's file (the week's rows never become a DataFrame here)."""
    stored = inputs.transformed_transactions
    transactions = transaction_aggregates(
        query_stored(stored.path, "transactions", transaction_aggregates_sql(stored.columns))
    )
    return week_per_person(
        inputs.identity,
        inputs.crm_customers,
        inputs.erp_customers,
        inputs.customer_event_aggregates,
        transactions,
        known_of,
    )


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
            source_version=f"customer_assets {version('customer_assets')}; "
            f"crm={crm.kind}; events={events}",
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
    """`customer_analytics.dim_customers`, SCD type 2 per person over segment, value tier, status
    and country (effective_from, effective_to, is_current, version, merged_into).

    Maintained in the warehouse by one SQL MERGE per week: the versions of the persons the week
    touches are recomputed from their weekly snapshots and swapped in, so a week's cost does not
    grow with the number of weeks, re-running a week adds no versions, and backfilling an older
    week gives the same history as running the weeks in order. Then persons merged this week
    (`identity_merges`), and in every later loaded week, are followed: their versions end at the
    merge's week and name the person they merged into, and their facts count under it.
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
