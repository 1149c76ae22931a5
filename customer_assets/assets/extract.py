"""Extract: the week's completed transactions from the source PostgreSQL."""

from pathlib import Path

import dagster as dg
import psycopg2
import pyarrow as pa
from pydantic import Field

from customer_assets.assets.common import (
    ETL,
    OWNERS,
    PARTITIONS,
    SOURCE_READ,
    metadata_value,
    week_context,
)
from customer_assets.dagster_types import RawTransactionsFileType, check_raw_batch
from customer_assets.erasure import check_key, suppressed_hashes, suppressed_mask
from customer_assets.frames import ParquetSink, StoredFrame, query_stored
from customer_assets.io_managers.parquet import stage_intermediate
from customer_assets.partitions import latest_materialization
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import BatchSink
from customer_assets.sources.extract import shrinkage, stream_week_alongside, week_version
from customer_assets.sources.source_findings import SourceFindings, week_source_findings
from customer_assets.weeks import WeekContext

# Failures that another attempt may not meet: the connection dropped or was refused, a timeout, a
# server restarting. Anything else (a refused login, a missing grant, a value that does not parse)
# fails at once.
TRANSIENT_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    ConnectionError,
    TimeoutError,
)

SOURCE_TRANSACTIONS = dg.AssetSpec(
    key=["source", "transactions"],
    partitions_def=PARTITIONS,
    group_name="extract",
    kinds={"postgres"},
    owners=OWNERS,
    description="The source database's completed transactions of each week (not materialized "
    "here: observed). Its data version per week is the row count and a checksum of what the "
    "extract reads; the sensor `source_changes` observes recent weeks and re-runs a loaded week "
    "whose version changed (a refund, a status change, an edited amount, a late row).",
)


class ExtractConfig(dg.Config):
    """Run config of the extract (`ops: {etl__raw_transactions: {config: {...}}}`)."""

    allow_shrink: bool = Field(
        default=False,
        description="Re-load the week even though its source now holds far "
        "fewer completed transactions than when it was loaded (to zero, or by more than "
        "SOURCE_SHRINK_LIMIT): the source archived or purged them, and you mean the warehouse "
        "to lose them too.",
    )


def shrink_guard(
    context: dg.AssetExecutionContext, version: str, limit: float, allow: bool
) -> None:
    """Stops the run before anything is written when the week's source shrank sharply since it was
    loaded, unless the run config allows it: an archived or purged week must not wipe the loaded one
    by itself."""
    loaded = latest_materialization(context.instance, context.asset_key, context.partition_key)
    why = shrinkage(metadata_value(loaded, "source_version"), version, limit)
    if why and allow:
        context.log.warning(
            f"week {context.partition_key}: {why}; "
            "re-loaded as the run config allows (allow_shrink)"
        )
    elif why:
        raise dg.Failure(
            description=f"Week {context.partition_key} not re-loaded: {why}. The warehouse keeps "
            "the week as loaded. If the source lost these rows on purpose, re-run the week with "
            "run config `ops: {etl__raw_transactions: {config: {allow_shrink: true}}}`.",
            allow_retries=False,
        )


def warn_source_findings(context: dg.AssetExecutionContext, findings: SourceFindings) -> None:
    """Warns of what the customers table holds that the week's rows are not to blame for: the
    counts go to the metadata (and the quality report) anyway; the warning puts them in the log."""
    if findings.duplicate_customer_records:
        context.log.warning(
            "DUPLICATE_CUSTOMER_RECORD: the customers table holds "
            f"{findings.duplicate_customer_records} record(s) beyond one per customer id; each "
            "transaction joined one of them (the latest created_at)"
        )
    if findings.id_collisions:
        context.log.warning(
            f"ID_COLLISION: {findings.id_collisions} customer id(s) of the source differ from "
            f"another only by case (e.g. {', '.join(findings.id_collision_examples)}); "
            "their transactions stay apart, matching across sources sees one id"
        )


def read_source_week(
    context: dg.AssetExecutionContext,
    source_db: PostgresSource,
    span: WeekContext,
    shrink_limit: float,
    allow_shrink: bool,
    into: BatchSink,
) -> tuple[str, SourceFindings]:
    """The week's rows (into ``into``, as they stream), their source version and the customers
    table's findings, all read in one snapshot; the shrink guard decides once they are read. A
    failure the next attempt would meet the same way becomes one the retry policy does not retry; a
    transient one is left to it."""
    try:
        # one snapshot: the version describes the rows read
        with source_db.connect(context.log) as conn:
            schema = source_db.schema(conn)
            # The version and the findings on a second connection importing this one's snapshot,
            # while the rows stream.
            _, (version, findings) = stream_week_alongside(
                conn,
                span.week_start,
                span.week_end,
                lambda snapshot: source_db.connect_beside(conn, snapshot),
                schema,
                lambda other: (
                    week_version(other, span.week_start, span.week_end, schema),
                    week_source_findings(other, span.week_start, span.week_end, schema),
                ),
                log=context.log,
                into=into,
            )
            shrink_guard(context, version, shrink_limit, allow_shrink)
    except (dg.Failure, *TRANSIENT_ERRORS):
        raise  # already classified, or worth the retry policy's next attempt
    except Exception as exc:  # a query or a value that will fail the same way next time
        raise dg.Failure(
            description=f"The extract of week {context.partition_key} failed in a way a retry "
            f"cannot fix: {type(exc).__name__}: {exc}",
            allow_retries=False,
        ) from exc
    return version, findings


class RawWeekFile(ParquetSink):
    """The week's rows written as they stream, each block checked against ``RawTransactions``;
    the rows of customers on the erasure suppression list (its ``hashes``) left out and counted."""

    def __init__(self, path: Path, hashes: frozenset[str], hash_key: str):
        super().__init__(path, check=check_raw_batch)
        self.hashes, self.hash_key = hashes, hash_key
        self.suppressed = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self.hashes and batch.num_rows:
            ids = batch.column("customer_id").to_pandas()
            erased = suppressed_mask(ids, self.hashes, self.hash_key).to_numpy()
            if erased.any():
                self.suppressed += int(erased.sum())
                batch = batch.filter(pa.array(~erased))
        super().write(batch)

    def restart(self) -> None:
        super().restart()
        self.suppressed = 0


def extract_metadata(
    week: StoredFrame,
    span: WeekContext,
    version: str,
    source_db: PostgresSource,
    findings: SourceFindings,
    suppressed: int,
) -> dict:
    """The extract's metadata: what was read and from where, and what was left out or flagged (the
    quality report and the error log read these counts), the week's counts read off its file."""
    invalid, customers = query_stored(
        week.path,
        "week",
        "SELECT count(invalid_encoding) AS invalid, count(DISTINCT customer_id) AS customers "
        "FROM week",
    ).iloc[0]
    return {
        "source_version": version,
        "dagster/row_count": len(week),
        "week_start": span.week_start.isoformat(),
        "week_end": span.week_end.isoformat(),
        "source": source_db.description,
        "source_route": source_db.route,
        "invalid_encoding_rows": int(invalid),
        "suppressed_rows": suppressed,
        "excluded_statuses": dg.MetadataValue.json(findings.excluded_statuses),
        "excluded_rows": sum(findings.excluded_statuses.values()),
        "duplicate_customer_records": findings.duplicate_customer_records,
        "id_collisions": findings.id_collisions,
        "id_collision_examples": dg.MetadataValue.json(findings.id_collision_examples),
        "distinct_customers": int(customers),
    }


@dg.asset(
    key_prefix=[ETL],
    partitions_def=PARTITIONS,
    group_name="extract",
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    dagster_type=RawTransactionsFileType,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    deps=[SOURCE_TRANSACTIONS],
    op_tags=SOURCE_READ,
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    config: ExtractConfig,
    source_db: PostgresSource,
    warehouse: WarehouseSQL,
    pii: PiiKey,
    settings: PipelineSettings,
) -> dg.Output[StoredFrame]:
    """The week's `completed` transactions (any case or padding of the status) joined to their
    customer and product, on trimmed ids, one customer and product row per id.

    Columns: transaction_id, customer_id, country, segment, amount, currency, timestamp, product_id,
    product_name, category, customer_created_at, and whether the customer and product exist.
    Email, phone and address are never selected; customers on the erasure suppression list are left
    out (counted in `suppressed_rows`). Transactions whose customer or product is missing are
    kept (outer side of the join) so that validation quarantines them: nothing is dropped here. The
    metadata counts the week's rows of other statuses (`excluded_statuses`), the customers table's
    records beyond one per id (`duplicate_customer_records`) and ids that differ only by case
    (`id_collisions`).
    The rows stream from `COPY ... TO STDOUT` in ~1 MiB blocks, each checked and written to the
    week's Parquet file as it arrives: memory holds a block, never the week.

    A week whose source shrank sharply since it was loaded (to zero, or by more than
    `SOURCE_SHRINK_LIMIT`) stops here, before anything is written, unless the run config says
    `allow_shrink: true`.
    """
    span = week_context(context)
    # a changed or lost key would bring erased customers back: stop first
    check_key(warehouse, pii.hash_key, pii.where)
    # forgotten on request: never extracted again
    week = RawWeekFile(
        stage_intermediate(settings, context),
        suppressed_hashes(warehouse, pii.hash_key),
        pii.hash_key,
    )
    try:
        version, findings = read_source_week(
            context, source_db, span, settings.source_shrink_limit, config.allow_shrink, week
        )
        stored = week.close()
    except BaseException:
        week.discard()  # no part of the week is left behind
        raise
    if week.suppressed:
        context.log.info(
            f"{week.suppressed} row(s) of erased customers left out (suppression list)"
        )
    metadata = extract_metadata(stored, span, version, source_db, findings, week.suppressed)
    if metadata["invalid_encoding_rows"]:
        context.log.warning(
            f"{metadata['invalid_encoding_rows']} row(s) hold text that is not UTF-8; they are "
            "quarantined INVALID_ENCODING"
        )
    warn_source_findings(context, findings)
    return dg.Output(stored, data_version=dg.DataVersion(version), metadata=metadata)
