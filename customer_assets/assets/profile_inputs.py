"""The profile branch's own inputs: the week's CRM customers and its behavioural events.

Kept apart from the profiles they feed (``profiles.py``) because each talks to an outside source
with its own failure modes (a rate-limited CRM, a landing zone that falls silent) and its own
warning checks. The ERP's customers, the branch's third input, are read in ``identity.py``.
"""

from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    WEEK_WIDE,
    check_result,
    check_spec,
    week_context,
)
from customer_assets.assets.kafka import KAFKA_EVENTS
from customer_assets.dagster_types import CrmCustomersType, CustomerEventAggregatesType
from customer_assets.logic import checks
from customer_assets.logic.crm_records import standardise_crm
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.settings import PipelineSettings
from customer_assets.sources.event_parse import EventScan
from customer_assets.sources.event_week import EVENTS_SCHEMA
from customer_assets.sources.events import MalformedEventsError, aggregate, read_week
from customer_assets.sources.landing_zone import day_folders
from customer_assets.weeks import WeekContext

CRM = dg.AssetKey([ETL, "crm_customers"])
EVENTS = dg.AssetKey([ETL, "customer_event_aggregates"])
# What seed 001 asks of each CRM customer ("all required fields present"): phone and updated_at are
# not among them.
CRM_REQUIRED_FIELDS = (
    "customer_id",
    "email",
    "signup_date",
    "last_activity_date",
    "subscription_tier",
    "lifetime_value",
    "support_ticket_count",
)


@dg.asset(
    op_tags=WEEK_WIDE,
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"api", "pandas"},
    owners=OWNERS,
    dagster_type=CrmCustomersType,
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
    pii: PiiKey,
    source_db: PostgresSource,
    settings: PipelineSettings,
):
    """CRM customers updated in the week (all pages), standardised, emails and phones as keyed
    HMAC-SHA256.

    From the CRM REST API when `CRM_API_URL` is set (100 requests a minute, backoff on 429, smaller
    pages on timeouts); on the embedded demo, from its `crm_customers` table. Without a CRM the week
    has no CRM records (metadata `source: none`) and profiles come from the other sources. A page
    that fails for good is skipped and recorded, and the materialization is marked `partial`.
    Warning checks: fewer records than CRM_MIN_RECORDS, records without a required field.
    """
    span = week_context(context)
    if crm.kind == "none":
        context.log.info(
            "No CRM configured (CRM_API_URL unset): "
            "the week's profiles use the database and events."
        )
    extract = crm.fetch_week(span.week_start, span.week_end, source_db)
    frame, counts = standardise_crm(extract.frame(), pii.hash_key)
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
    """Per customer, the week's page views, distinct features used, purchases (count, USD) and
    support chats.

    Read from the landing zone `EVENTS_PATH/dt=YYYY-MM-DD/*.jsonl` (or `.jsonl.gz`); aliases map
    other event names; malformed lines are counted, the first ten logged with file and line, and
    skipped; above EVENTS_MAX_MALFORMED_SHARE (5%) of the week's lines the week stops; other
    compressed files are skipped and listed; events outside the week are ignored. A warning check
    names the days of the week without an event file (a feed that fell silent).
    """
    span = week_context(context)
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
    events, scan = _read_landing_zone(context, settings, root, span)
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
    days = [span.week_start.date() + timedelta(days=i) for i in range(7)]
    with_files = _days_with_files(root, span.week_start, span.week_end)
    yield check_result(
        EVENTS,
        "events_cover_week",
        checks.events_cover_week(days, with_files, len(events), str(root)),
        events=len(events),
        days_without_files=len([d for d in days if d not in with_files]),
    )


def _read_landing_zone(
    context: dg.AssetExecutionContext, settings: PipelineSettings, root: Path, span: WeekContext
) -> tuple[pa.Table, EventScan]:
    """The week's events and the scan of their files; a configured landing zone that cannot be read,
    or holds too many malformed lines, stops the week without retries (a retry reads the same
    files)."""
    if not root.is_dir():
        raise dg.Failure(
            description=f"EVENTS_PATH={root} is configured but is not a readable directory; "
            "unset EVENTS_PATH to run the week without events.",
            allow_retries=False,
        )
    try:
        return read_week(
            root,
            span.week_start,
            span.week_end,
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


def _days_with_files(root: Path, start: datetime, end: datetime) -> set[date]:
    """The days whose folder of the landing zone holds a file with data (an empty file is a silent
    day)."""
    return {
        date.fromisoformat(folder.name.removeprefix("dt="))
        for folder in day_folders(root, start, end)
        if any(path.is_file() and path.stat().st_size > 0 for path in folder.iterdir())
    }
