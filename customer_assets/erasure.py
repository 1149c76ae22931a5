"""Erasure on request: a customer removed from every warehouse table and kept file, and kept out
afterwards.

The job ``erase_customers`` reads the customer ids from a file (``ids_file``, one id a line; ``-``
for standard input), never from its run config, so Dagster's run storage holds no id. It first adds
their keyed hashes (HMAC-SHA256 under PII_HASH_KEY, with the key's fingerprint, never the ids) to
the warehouse table ``erasure_suppression`` (``suppression.py``), then deletes their rows from every
week of every customer table, DuckDB and BigQuery alike, and from the week files under the reports
directory, and removes the intermediates that runs which ended left behind, on the disk or in the
bucket (``erase_intermediates``). Its run records counts, paths and keyed hashes only.

Later weekly runs and backfills read the suppression list: the extract drops those customers' rows
(counted in its metadata as ``suppressed_rows``), the profiles leave them out, and each step that
writes customer rows removes listed customers again after its write (``scrub``), so a run that
started before an erasure cannot undo it. ``rekey_suppression`` moves the list to a new
PII_HASH_KEY.
"""

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from pydantic import Field

from customer_assets.cleanup.claims import sweep_orphans
from customer_assets.cleanup.records import write_log
from customer_assets.cleanup.runs import run_weeks
from customer_assets.duck import ReadCopyFailed
from customer_assets.logic.identity import is_in, standardise_ids
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.pii import PiiKey
from customer_assets.resources.postgres import PostgresSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings
from customer_assets.sources.copy_stream import copy_query
from customer_assets.suppression import (  # noqa: F401  (the list's readers import them from here)
    SUPPRESSION,
    add_to_list,
    canonical_ids,
    check_key,
    customer_hashes,
    delete_customers,
    drop_suppressed,
    fingerprint,
    rewrite_files,
    suppressed_hashes,
    suppressed_mask,
    with_their_persons,
)
from customer_assets.suppression_rekey import rekey


def erase_from_warehouse(
    warehouse: WarehouseSQL, ids: list[str], hash_key: str, request: str
) -> dict[str, int]:
    """Add the ids' hashes to the suppression list, then delete their rows from every customer
    table; returns rows removed per table. Safe to repeat: a second run removes nothing and adds no
    hash twice. The list is written first: a weekly step that writes after the deletion finds the
    customer on it (``scrub``)."""
    check_key(warehouse, hash_key)
    ids = canonical_ids(ids)
    add_to_list(warehouse, customer_hashes(ids, hash_key), hash_key, request)
    return delete_customers(warehouse, ids)


def erase_from_files(roots: list[Path], ids: list[str]) -> dict[str, int]:
    """Rewrite every Parquet and CSV file under ``roots`` (the reports: anomaly listings) that has
    a ``customer_id`` column without those customers' rows; returns rows removed per file."""
    wanted = set(canonical_ids(ids))
    return rewrite_files(roots, lambda values: is_in(standardise_ids(values), wanted))


def erase_intermediates(
    context: dg.OpExecutionContext, settings: PipelineSettings
) -> dict[str, list[str]]:
    """Remove, whole, the intermediates of every week no run is working on (left by a dead run),
    wherever they are: found by the cleanup (``sweep_orphans``: the data dir and the bucket of
    CUSTOMER_ASSETS_INTERMEDIATES_URL), which records the dead run in ``failed_*.json``. Returns the
    paths removed per week. Intermediates of the weeks a run works on now (``running_weeks``, or
    claimed by a live process) are left to their run: removing a file a step reads fails the step,
    the run's writes are scrubbed after it, and its intermediates go when it ends (``cleanup``)."""
    return sweep_orphans(
        settings, context.instance, keep_run=context.run_id, keep_weeks=running_weeks(context)
    )


IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
LIST_JOBS = ("erase_customers", "rekey_suppression")


def wait_for_earlier_runs(
    context: dg.OpExecutionContext, minutes: float, poll_seconds: float = 2.0
) -> int:
    """Wait until the runs of this instance in progress when the erasure started have ended: a run
    that read the suppression list before the erasure would write the customers back after it.
    Returns how many it waited for; stops with one line, before anything is erased, when they
    outlast ``minutes``."""
    earlier = {
        run.run_id
        for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
        if run.run_id != context.run_id and run.job_name not in LIST_JOBS
    }
    if earlier:
        context.log.info(
            f"waiting for {len(earlier)} run(s) that started before this erasure: {sorted(earlier)}"
        )
    deadline = time.monotonic() + minutes * 60
    waiting = set(earlier)
    while waiting:
        waiting = {
            run.run_id
            for run in context.instance.get_runs(
                filters=dg.RunsFilter(run_ids=sorted(waiting), statuses=IN_PROGRESS)
            )
        }
        if waiting and time.monotonic() > deadline:
            raise dg.Failure(
                description=f"Nothing was erased: run(s) {sorted(waiting)} that started before this "
                f"erasure are still running after {minutes:g} minutes; run the erasure again when "
                "they end, or cancel them.",
                allow_retries=False,
            )
        if waiting:
            time.sleep(poll_seconds)
    return len(earlier)


def running_weeks(context: dg.OpExecutionContext) -> frozenset[str]:
    """The weeks other runs of this instance are working on now."""
    runs = context.instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return frozenset(
        week for run in runs if run.run_id != context.run_id for week in run_weeks(run)
    )


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a file, or of standard input for ``-`` (ids or a key never go in run
    config)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


class ErasureConfig(dg.Config):
    ids_file: str = Field(
        description="A file of the source customer ids to forget (as the transaction database "
        "holds them), one a line; `-` reads standard input. The ids are never in the run "
        "config, so Dagster's run storage keeps none."
    )
    request: str = Field(
        default="",
        description="The erasure request's reference (a ticket id), kept with the hashes.",
    )
    wait_for_runs_minutes: float = Field(
        default=360,
        description="How long to wait for runs that started before "
        "the erasure (they read the suppression list without these customers) "
        "before erasing; past it the erasure stops, erasing nothing.",
    )


def publish_forgetting(warehouse: WarehouseSQL) -> tuple[str | None, ReadCopyFailed | None]:
    """The analysts' copy published without the customers just erased; should that fail, no copy
    is left that remembers them, and the failure is returned, to be raised once the erasure is
    recorded."""
    try:
        return warehouse.publish_read_copy(drop_stale=True), None
    except ReadCopyFailed as failed:
        return None, failed


@dg.op(
    description="Forget customers: keyed hashes on the suppression list, rows deleted from every warehouse "
    "table and kept file, counts recorded.",
    out=dg.Out(dg.Nothing),
)
def erase_customers_op(
    context: dg.OpExecutionContext,
    config: ErasureConfig,
    warehouse: WarehouseSQL,
    pii: PiiKey,
    settings: PipelineSettings,
):
    ids = canonical_ids(read_lines(config.ids_file))
    if not ids:
        raise dg.Failure(
            description=f"erase_customers found no id in ids_file {config.ids_file}: one id a line",
            allow_retries=False,
        )
    check_key(warehouse, pii.hash_key, pii.where)
    waited = wait_for_earlier_runs(context, config.wait_for_runs_minutes)
    requested = len(ids)
    ids = with_their_persons(warehouse, ids)  # the person, under every id a source knows them by
    tables = erase_from_warehouse(warehouse, ids, pii.hash_key, config.request)
    intermediates = erase_intermediates(context, settings)
    files = erase_from_files([Path(settings.reports_dir)], ids)
    hashes = customer_hashes(ids, pii.hash_key)
    read_copy, copy_failed = publish_forgetting(warehouse)
    record = {
        "erased_at": datetime.now(timezone.utc).isoformat(),
        "request": config.request,
        "customers": requested,
        "ids_erased": len(ids),
        "customer_hashes": hashes,
        "waited_for_runs": waited,
        "key_fingerprint": fingerprint(pii.hash_key)[:12],
        "analysts_read_copy": read_copy,
        "rows_removed_per_table": tables,
        "rows_removed_per_file": files,
        "intermediates_removed": intermediates,
    }
    # counts and paths only: the ids are not written there
    path = write_log(settings, "erasure", record)
    left_behind = sum(len(removed) for removed in intermediates.values())
    context.log.info(
        f"erased {record['customers']} customer(s): {sum(tables.values())} warehouse rows, "
        f"{sum(files.values())} file rows, {left_behind} intermediate file(s) left by ended runs"
    )
    if copy_failed is not None:  # once the erasure is recorded
        raise copy_failed
    return dg.Output(
        None,
        metadata={
            "customers": record["customers"],
            "customer_hashes": dg.MetadataValue.json(hashes),
            "waited_for_runs": waited,
            "rows_removed": sum(tables.values()) + sum(files.values()),
            "per_table": dg.MetadataValue.json(tables),
            "files": dg.MetadataValue.json(files),
            "intermediates_removed": left_behind,
            "record": dg.MetadataValue.path(str(path.resolve())),
        },
    )


@dg.job(
    description="Forget customers on request (GDPR art. 17): give `ids_file`, a file of their ids (one a "
    "line, `-` for standard input), in the launchpad config. "
    "Removes them from every week of every warehouse table and kept file, and keeps their keyed hashes on "
    "the suppression list so later weeks and backfills leave them out.",
    tags={"dagster/max_retries": 0},
    executor_def=dg.in_process_executor,
)  # one step; `-` reads stdin
def erase_customers():
    erase_customers_op()


class RekeyConfig(dg.Config):
    old_key_file: str = Field(
        description="A file holding the key the list is hashed under now (`-`: standard "
        "input). The new key is the deployment's PII_HASH_KEY (or its local key file)."
    )
    drop_unmatched: bool = Field(
        default=False,
        description="Drop entries no source id matches (their requests "
        "are listed: erase those ids again under the new key) instead of stopping.",
    )


ALL_IDS_SQL = """
SELECT DISTINCT upper(trim({customer})) AS customer_id FROM customers c WHERE c.customer_id IS NOT NULL
UNION SELECT DISTINCT upper(trim({transaction})) FROM transactions t WHERE t.customer_id IS NOT NULL
"""


def source_customer_ids(source_db: PostgresSource, crm: CrmSource) -> list[str]:
    """Every customer id the sources hold: the database's customers and transactions, and the CRM's
    records."""
    import pyarrow as pa

    with source_db.connect() as conn:
        schema = source_db.schema(conn)
        sql = ALL_IDS_SQL.format(
            customer=schema.text("c", "customer_id"), transaction=schema.text("t", "customer_id")
        )
        ids = copy_query(conn, sql, None, pa.schema([("customer_id", pa.string())]))[
            "customer_id"
        ].to_pylist()
    extract = crm.fetch_week(
        datetime(1970, 1, 5, tzinfo=timezone.utc), datetime.now(timezone.utc), source_db
    )
    crm_ids = (
        [r.get("customer_id") for r in extract.records]
        if extract.table is None
        else extract.table["customer_id"].tolist()
    )
    return [i for i in ids + crm_ids if isinstance(i, str)]


@dg.op(
    description="Move the erasure suppression list to the deployment's PII_HASH_KEY: each entry re-derived "
    "from the ids the sources hold, hashed under the old key to match and under the new one to store.",
    out=dg.Out(dg.Nothing),
)
def rekey_suppression_op(
    context: dg.OpExecutionContext,
    config: RekeyConfig,
    warehouse: WarehouseSQL,
    pii: PiiKey,
    crm: CrmSource,
    source_db: PostgresSource,
    settings: PipelineSettings,
):
    keys = read_lines(config.old_key_file)
    if len(keys) != 1:
        raise dg.Failure(
            description=f"old_key_file {config.old_key_file} must hold the old key on one line",
            allow_retries=False,
        )
    moved = rekey(
        warehouse, keys[0], pii.hash_key, source_customer_ids(source_db, crm), config.drop_unmatched
    )
    path = write_log(
        settings, "rekey", {"rekeyed_at": datetime.now(timezone.utc).isoformat(), **moved}
    )
    context.log.info(
        f"suppression list moved from key {moved['old_fingerprint']} to {moved['new_fingerprint']}: "
        f"{moved['moved']} entries moved, {moved['dropped']} dropped"
    )
    return dg.Output(
        None,
        metadata={
            **{k: v for k, v in moved.items() if k != "dropped_requests"},
            "dropped_requests": dg.MetadataValue.json(moved["dropped_requests"]),
            "record": dg.MetadataValue.path(str(path.resolve())),
        },
    )


# one step; `-` reads stdin
@dg.job(
    description="After changing PII_HASH_KEY: move the erasure suppression list to the new key (the old "
    "key from a file or standard input, never run config). Runs stop until it has run.",
    tags={"dagster/max_retries": 0},
    executor_def=dg.in_process_executor,
)
def rekey_suppression():
    rekey_suppression_op()
