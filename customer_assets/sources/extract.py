"""The week's extract from the source PostgreSQL: its SQL, its stream into Arrow, its version.

The week's completed transactions stream through ``copy_query`` (``copy_stream.py``) in bounded
blocks, each block put in its final types as it arrives. The week's version (row count and checksum)
is computed in the same snapshot, alongside the stream (``read_beside.py``), so that a later
change of the source shows as a new version. What else the source holds is read in
``source_findings.py`` and ``customers_and_products.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.errors import first_line
from customer_assets.sources.copy_stream import (
    BLOCK_SIZE,
    INVALID_ENCODING,
    TEXT,
    BatchSink,
    ExtractParseError,
    StreamProgress,
    copy_query,
    take_marks,
)
from customer_assets.sources.read_beside import ReadBeside, export_snapshot
from customer_assets.sources.source_schema import SourceSchema, read_source_schema

T = TypeVar("T")

_log = logging.getLogger(__name__)


# What the extract and the week's version mean by an id and by a completed transaction, in SQL: ids
# trimmed of ASCII whitespace (``btrim`` alone trims only spaces), an empty id a missing one; the
# status in any case and padding (``'Completed'``, ``'completed '``).
_WHITESPACE = r"E' \t\n\r\f\x0b'"


def trimmed_sql(expr: str) -> str:
    """SQL for a text id as the pipeline compares it: surrounding whitespace removed, '' as NULL."""
    return f"nullif(btrim({expr}, {_WHITESPACE}), '')"


def completed_sql(alias: str = "t") -> str:
    """SQL that is true for a completed transaction, whatever the case and padding of its status.
    The plain comparison first: the planner estimates it from the column's statistics (a function of
    the column alone it guesses at 0.5% of the rows, and chose a merge join with an external sort),
    and most rows stop there."""
    status = f"{alias}.status::text"
    return f"({status} = 'completed' OR lower(btrim({status}, {_WHITESPACE})) = 'completed')"


def _week_filter(alias: str = "t") -> str:
    return (
        f'{completed_sql(alias)} AND {alias}."timestamp" >= %(start)s '
        f'AND {alias}."timestamp" < %(end)s'
    )


def week_extract_sql(schema: SourceSchema) -> str:
    """The week's completed transactions joined to their customer and product, in the pipeline's
    types: ids as text, timestamps as naive UTC, amounts as float8, whatever the source's own types
    are.

    Joined on trimmed ids (a transaction's ``'C0000150 '`` is customer ``C0000150``), exactly
    otherwise: ids that differ only by case are different customers of this source. ``customers``
    and ``products`` need no primary key: each id joins one row, so a table holding a customer twice
    multiplies no transaction (the extract's metadata counts such records,
    ``week_source_findings``). The row joined is the customer's latest ``created_at``, then the
    least country and segment (byte order): rows equal in all four are the same to the extract, so
    the pick depends on neither the physical order nor ``ctid``, which VACUUM FULL changes.

    Email, phone and address are never selected: PII minimisation starts in the query. Parameters
    ``start`` and ``end`` are the week's bounds as the timestamp column compares them
    (``SourceSchema.bound``).
    """
    return f"""
WITH c AS (
  SELECT DISTINCT ON (id) id, country, segment, created_at
  FROM (SELECT {trimmed_sql(schema.text("c", "customer_id"))} AS id, c.country::text AS country,
               c.segment::text AS segment, {schema.utc("c", "customers", "created_at")} AS created_at
        FROM customers c) c
  WHERE id IS NOT NULL
  ORDER BY id, created_at DESC NULLS LAST, country COLLATE "C", segment COLLATE "C"
), p AS (
  SELECT DISTINCT ON (id) id, name, category
  FROM (SELECT {trimmed_sql(schema.text("p", "product_id"))} AS id, p.name::text AS name,
               p.category::text AS category FROM products p) p
  WHERE id IS NOT NULL
  ORDER BY id, name COLLATE "C", category COLLATE "C"
)
SELECT {schema.text("t", "transaction_id")} AS transaction_id, {schema.text("t", "customer_id")} AS customer_id,
       c.country, c.segment, t.amount::float8 AS amount,
       t.currency::text AS currency, {schema.utc("t", "transactions", "timestamp")} AS "timestamp",
       {schema.text("t", "product_id")} AS product_id, p.name AS product_name, p.category,
       c.created_at AS customer_created_at, c.id IS NOT NULL AS customer_exists, p.id IS NOT NULL AS product_exists
FROM transactions t
LEFT JOIN c ON c.id = {trimmed_sql(schema.text("t", "customer_id"))}
LEFT JOIN p ON p.id = {trimmed_sql(schema.text("t", "product_id"))}
WHERE {_week_filter("t")}
"""


ARROW_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("customer_id", pa.string()),
        ("country", pa.string()),
        ("segment", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("product_id", pa.string()),
        ("product_name", pa.string()),
        ("category", pa.string()),
        ("customer_created_at", pa.timestamp("us")),
        ("customer_exists", pa.bool_()),
        ("product_exists", pa.bool_()),
    ]
)

ID_COLUMNS = ("transaction_id", "customer_id", "product_id")

# What a parsed block becomes: UTC nanosecond timestamps, flags never null (what pandas will hold),
# and the columns of each row that were not UTF-8.
RAW_ARROW_SCHEMA = pa.schema(
    [
        field.with_type(pa.timestamp("ns", tz="UTC"))
        if pa.types.is_timestamp(field.type)
        else field.with_type(TEXT)
        if pa.types.is_string(field.type)
        else field
        for field in ARROW_SCHEMA
    ]
    + [pa.field(INVALID_ENCODING, TEXT)]
)


def _trimmed_id(column: pa.Array) -> pa.Array:
    """Ids compared as the source means them: surrounding whitespace removed, an empty id is a
    missing one."""
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, trimmed.type), trimmed)


def _finish(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Each block in its final types as it arrives, so no second copy of the week is made later."""
    arrays = []
    for field, column in zip(batch.schema, batch.columns, strict=False):
        if field.name in ID_COLUMNS:
            column = _trimmed_id(column)
        elif pa.types.is_timestamp(field.type):
            try:
                column = column.cast(pa.timestamp("ns", tz="UTC"))
            except pa.ArrowInvalid as exc:  # e.g. a 0001-01-01 sentinel: outside what pandas holds
                raise ExtractParseError(
                    f"the source's column {field.name!r} holds a timestamp outside "
                    f"1677-2262, which the pipeline cannot hold: {exc}"
                ) from exc
        elif pa.types.is_boolean(field.type):
            column = pc.fill_null(column, False)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA)


def stream_week(
    conn,
    start: datetime,
    end: datetime,
    block_size: int = BLOCK_SIZE,
    schema: SourceSchema | None = None,
    log=None,
    progress_seconds: float = 30.0,
    into: BatchSink | None = None,
) -> pa.Table | None:
    """The week's completed transactions as an Arrow table, streamed in bounded blocks (the source's
    schema is checked first unless given); with ``into``, each block goes there in its final types
    as it arrives (``copy_query``), and nothing is returned. ``log`` (a step's ``context.log``)
    receives the rows read so far every ``progress_seconds`` while the stream runs, and the total at
    its end."""
    schema = schema or read_source_schema(conn)
    bounds = {
        "start": schema.bound("transactions", "timestamp", start),
        "end": schema.bound("transactions", "timestamp", end),
    }
    with StreamProgress(log or _log, "extract", progress_seconds) as progress:
        return copy_query(
            conn,
            week_extract_sql(schema),
            bounds,
            ARROW_SCHEMA,
            finish=_finish,
            block_size=block_size,
            progress=progress,
            into=into,
        )


def week_version_sql(schema: SourceSchema) -> str:
    """The count of the week's completed transactions and a checksum of what the pipeline reads of
    them: a refund, a status change, an edited amount or a late row changes the week's version.

    ``hashtextextended`` is the hash of PostgreSQL's hash partitioning, kept stable across versions
    for that reason; md5 costs several times as much (and FIPS servers refuse it). One week per
    query: grouping several weeks in one query cost more per row than the week alone."""
    row = (
        f"concat_ws('|', {schema.text('t', 'transaction_id')}, {schema.text('t', 'customer_id')}, "
        f'{schema.text("t", "product_id")}, t.amount::text, t.currency::text, t."timestamp"::text)'
    )
    return f"""
SELECT count(*), coalesce(sum(hashtextextended({row}, 0)::numeric), 0)::text
FROM transactions t
WHERE {_week_filter("t")}
"""


def week_version(conn, start: datetime, end: datetime, schema: SourceSchema | None = None) -> str:
    """``rows:checksum`` of the week [start, end) as the source holds it now (``0:0`` when
    empty)."""
    schema = schema or read_source_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            week_version_sql(schema),
            {
                "start": schema.bound("transactions", "timestamp", start),
                "end": schema.bound("transactions", "timestamp", end),
            },
        )
        n, checksum = cur.fetchone()
    return f"{n}:{checksum}"


EMPTY_WEEK_VERSION = "0:0"


def stream_week_alongside(
    conn,
    start: datetime,
    end: datetime,
    connect_snapshot,
    schema: SourceSchema,
    alongside: Callable[[Any], T],
    log=None,
    progress_seconds: float = 30.0,
    block_size: int = BLOCK_SIZE,
    into: BatchSink | None = None,
) -> tuple[pa.Table | None, T]:
    """``stream_week`` (into ``into``, if given) and ``alongside(connection)`` (the week's version,
    the source's findings) of one snapshot, ``alongside`` computed while the rows stream.

    ``conn`` is in a REPEATABLE READ transaction (``PostgresSource.connect``); its snapshot is
    exported, and ``connect_snapshot(snapshot_id)`` opens (as a context manager) a second connection
    to the same server that imports it (``PostgresSource.connect_beside``), so what ``alongside``
    reads describes exactly the rows read whatever commits meanwhile. It runs there, in a thread,
    concurrently with the COPY: the extract costs the longer of the two, not their sum. Its failure
    (a lock or statement timeout) fails the extract as it would on ``conn``; a failure of the
    extract stops its query and thread. If the second connection cannot be had (refused, too many
    connections, a snapshot that server does not know), ``alongside`` runs on ``conn`` after the
    rows, in the same snapshot, and a warning says so.
    """
    log = log or _log
    beside = ReadBeside(connect_snapshot, export_snapshot(conn), alongside).start()
    try:
        table = stream_week(
            conn,
            start,
            end,
            block_size=block_size,
            schema=schema,
            log=log,
            progress_seconds=progress_seconds,
            into=into,
        )
        found = beside.result()
    finally:
        beside.stop()
    if beside.unavailable is not None:
        reason = first_line(beside.unavailable)
        log.warning(
            f"no second connection on the extract's snapshot ({reason}); the week's version (and "
            "what else is read beside the rows) is computed after the rows, on the extract's "
            "connection"
        )
        found = alongside(conn)
    return table, found


def stream_week_versioned(
    conn,
    start: datetime,
    end: datetime,
    connect_snapshot,
    schema: SourceSchema,
    log=None,
    progress_seconds: float = 30.0,
    block_size: int = BLOCK_SIZE,
) -> tuple[pa.Table, str]:
    """``stream_week`` and ``week_version`` of one snapshot, the version computed while the rows
    stream (``stream_week_alongside``)."""
    return stream_week_alongside(
        conn,
        start,
        end,
        connect_snapshot,
        schema,
        lambda other: week_version(other, start, end, schema),
        log=log,
        progress_seconds=progress_seconds,
        block_size=block_size,
    )


def version_rows(version: str | None) -> int | None:
    """The row count of a week's version (``rows:checksum``), or None when there is none."""
    return int(version.split(":", 1)[0]) if version else None


def shrinkage(loaded: str | None, now: str, limit: float) -> str | None:
    """Why a week whose source now holds far fewer completed rows than when it was loaded must not
    be re-loaded without an operator (the source archived or purged it), or None. Sharply: to zero,
    or by more than ``limit`` (a share, SOURCE_SHRINK_LIMIT) of the rows loaded."""
    before, after = version_rows(loaded), version_rows(now)
    if not before or after is None or after >= before:
        return None
    share = (before - after) / before
    if after == 0 or share > limit:
        return (
            f"the source now holds {after} completed transactions of the week, {before} when it "
            f"was loaded (-{share:.0%}, more than SOURCE_SHRINK_LIMIT={limit:g})"
        )
    return None


def completed_ids_sql(schema: SourceSchema) -> str:
    """The completed transactions among an array of (trimmed) ids within a time range:
    (transaction_id, UTC timestamp). Through the timestamp index; the range is the weeks the
    warehouse holds those ids in."""
    tid = trimmed_sql(schema.text("t", "transaction_id"))
    return f"""
SELECT {tid} AS transaction_id, {schema.utc("t", "transactions", "timestamp")} AS "timestamp"
FROM transactions t
WHERE {_week_filter("t")} AND {tid} = ANY(%(ids)s::text[])
"""


COMPLETED_IDS_SCHEMA = pa.schema(
    [("transaction_id", pa.string()), ("timestamp", pa.timestamp("us"))]
)


def completed_ids(
    conn, schema: SourceSchema, ids: list[str], start: datetime, end: datetime
) -> pd.DataFrame:
    """Where the source holds these transaction ids completed in [start, end): one row per source
    row, UTC timestamps. Used for the few ids another loaded week holds, to tell a moved transaction
    (gone from that week) from a reused id (still there)."""
    params = {
        "ids": list(ids),
        "start": schema.bound("transactions", "timestamp", start),
        "end": schema.bound("transactions", "timestamp", end),
    }
    found, _ = take_marks(copy_query(conn, completed_ids_sql(schema), params, COMPLETED_IDS_SCHEMA))
    frame = found.to_pandas()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC")
    return frame


def to_raw_frame(table: pa.Table) -> pd.DataFrame:
    """The extract in the pandas shape of ``RawTransactions`` (UTC timestamps, object strings).

    The Arrow buffers are released column by column while pandas takes them (``self_destruct``), so
    the week is not held twice; the table must not be used afterwards.
    """
    return table.to_pandas(split_blocks=True, self_destruct=True)
