"""Streaming extract of one week: ``COPY (query) TO STDOUT`` parsed incrementally by pyarrow.

The server formats rows as CSV; a writer thread feeds them through a pipe to pyarrow's streaming CSV
reader, which parses fixed-size blocks (~1 MiB, roughly 8,000 rows). Memory holds the Arrow batches of
the week, never the whole text, and nothing touches the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from customer_assets.sources.source_schema import SourceSchema, read_source_schema

_log = logging.getLogger(__name__)


# What the extract and the week's version mean by an id and by a completed transaction, in SQL: ids trimmed of
# ASCII whitespace (``btrim`` alone trims only spaces), an empty id a missing one; the status in any case and
# padding (``'Completed'``, ``'completed '``).
_WHITESPACE = r"E' \t\n\r\f\x0b'"


def trimmed_sql(expr: str) -> str:
    """SQL for a text id as the pipeline compares it: surrounding whitespace removed, '' as NULL."""
    return f"nullif(btrim({expr}, {_WHITESPACE}), '')"


def completed_sql(alias: str = "t") -> str:
    """SQL that is true for a completed transaction, whatever the case and padding of its status. The plain
    comparison first: the planner estimates it from the column's statistics (a function of the column alone it
    guesses at 0.5% of the rows, and chose a merge join with an external sort), and most rows stop there."""
    status = f"{alias}.status::text"
    return f"({status} = 'completed' OR lower(btrim({status}, {_WHITESPACE})) = 'completed')"


def _week_filter(alias: str = "t") -> str:
    return f'{completed_sql(alias)} AND {alias}."timestamp" >= %(start)s AND {alias}."timestamp" < %(end)s'


def week_extract_sql(schema: SourceSchema) -> str:
    """The week's completed transactions joined to their customer and product, in the pipeline's types: ids
    as text, timestamps as naive UTC, amounts as float8, whatever the source's own types are.

    Joined on trimmed ids (a transaction's ``'C0000150 '`` is customer ``C0000150``), exactly otherwise: ids that
    differ only by case are different customers of this source. ``customers`` and ``products`` need no primary
    key: each id joins one row, so a table holding a customer twice multiplies no transaction (the extract's
    metadata counts such records, ``week_source_findings``). The row joined is the customer's latest
    ``created_at``, then the least country and segment (byte order): rows equal in all four are the same to the
    extract, so the pick depends on neither the physical order nor ``ctid``, which VACUUM FULL changes.

    Email, phone and address are never selected: PII minimisation starts in the query. Parameters ``start``
    and ``end`` are the week's bounds as the timestamp column compares them (``SourceSchema.bound``).
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


# The demo's shape (text ids, timestamptz): what the benchmarks' reference probes read.
DEMO_SCHEMA = SourceSchema(types={(t, c): "timestamp with time zone" for t, c in
                                  (("transactions", "timestamp"), ("customers", "created_at"))})
WEEK_EXTRACT_SQL = week_extract_sql(DEMO_SCHEMA)

ARROW_SCHEMA = pa.schema([
    ("transaction_id", pa.string()), ("customer_id", pa.string()), ("country", pa.string()),
    ("segment", pa.string()), ("amount", pa.float64()), ("currency", pa.string()),
    ("timestamp", pa.timestamp("us")), ("product_id", pa.string()), ("product_name", pa.string()),
    ("category", pa.string()), ("customer_created_at", pa.timestamp("us")),
    ("customer_exists", pa.bool_()), ("product_exists", pa.bool_()),
])

ID_COLUMNS = ("transaction_id", "customer_id", "product_id")

# The column ``copy_query`` adds to what it reads: per row, the ``;``-joined names of the columns whose bytes
# were not UTF-8 (null when the row was clean); and the count of such values a reader's frame carries.
INVALID_ENCODING = "invalid_encoding"
INVALID_ENCODING_VALUES = "invalid_encoding_values"

# What a parsed block becomes: UTC nanosecond timestamps, flags never null (what pandas will hold), and the
# columns of each row that were not UTF-8.
RAW_ARROW_SCHEMA = pa.schema([
    field.with_type(pa.timestamp("ns", tz="UTC")) if pa.types.is_timestamp(field.type) else field
    for field in ARROW_SCHEMA] + [pa.field(INVALID_ENCODING, pa.string())])

BLOCK_SIZE = 1 << 20


def _decode(column: pa.Array, name: str, bad: dict[int, list[str]]) -> pa.Array:
    """UTF-8 text of a binary column; a value that is not UTF-8 is replaced (U+FFFD) and its row noted."""
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:  # rare: the one block holding such a value takes the per-value path
        values = []
        for row, value in enumerate(column.to_pylist()):
            if value is not None:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    value = value.decode("utf-8", errors="replace")
                    bad.setdefault(row, []).append(name)
            values.append(value)
        return pa.array(values, pa.string())


def _as_bytes(schema: pa.Schema) -> pa.Schema:
    """How the COPY text is parsed: text as bytes, decoded block by block by ``_decoded``, so that one value a
    SQL_ASCII (or otherwise unchecked) source holds in another encoding is marked instead of failing the read."""
    return pa.schema([field.with_type(pa.binary()) if pa.types.is_string(field.type) else field for field in schema])


def _decoded(batch: pa.RecordBatch, text: frozenset[str]) -> pa.RecordBatch:
    """A parsed block with its ``text`` columns decoded, and ``invalid_encoding`` appended."""
    bad: dict[int, list[str]] = {}
    arrays, fields = [], []
    for field, column in zip(batch.schema, batch.columns):
        if field.name in text:
            column, field = _decode(column, field.name, bad), field.with_type(pa.string())
        arrays.append(column)
        fields.append(field)
    marks = [";".join(bad[row]) if row in bad else None for row in range(batch.num_rows)] if bad else None
    arrays.append(pa.array(marks, pa.string()) if marks else pa.nulls(batch.num_rows, pa.string()))
    fields.append(pa.field(INVALID_ENCODING, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _trimmed_id(column: pa.Array) -> pa.Array:
    """Ids compared as the source means them: surrounding whitespace removed, an empty id is a missing one."""
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _finish(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Each block in its final types as it arrives, so no second copy of the week is made later."""
    arrays = []
    for field, column in zip(batch.schema, batch.columns):
        if field.name in ID_COLUMNS:
            column = _trimmed_id(column)
        elif pa.types.is_timestamp(field.type):
            try:
                column = column.cast(pa.timestamp("ns", tz="UTC"))
            except pa.ArrowInvalid as exc:  # e.g. a 0001-01-01 sentinel: outside what pandas holds
                raise ExtractParseError(f"the source's column {field.name!r} holds a timestamp outside "
                                        f"1677-2262, which the pipeline cannot hold: {exc}") from exc
        elif pa.types.is_boolean(field.type):
            column = pc.fill_null(column, False)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA)


class ExtractParseError(ValueError):
    """A value of the COPY stream that does not parse as its column's type: names the column (and the CSV
    row pyarrow was at), not only pyarrow's column number."""


def _named(exc: pa.ArrowInvalid, schema: pa.Schema) -> Exception:
    message = str(exc)
    match = re.search(r"column #(\d+)", message)
    if not match or int(match.group(1)) >= len(schema):
        return exc
    column = schema.names[int(match.group(1))]
    return ExtractParseError(f"the source's column {column!r} holds a value the extract cannot read as "
                             f"{schema.field(column).type}: {message}")


def _copy_into(conn, copy_sql: str, sink, errors: list[BaseException]) -> None:
    try:
        with conn.cursor() as cur:
            cur.copy_expert(copy_sql, sink, size=BLOCK_SIZE)
    except BaseException as exc:  # re-raised by the reading side
        errors.append(exc)
    finally:
        sink.close()


class StreamProgress:
    """Logs, every ``every`` seconds while a COPY stream runs, the rows read so far, or that none came yet (a
    query waiting for a lock sends nothing): a long extract is never silent. A thread of its own does the
    logging, because the reading side is blocked while it waits; the final line gives the total."""

    def __init__(self, log, what: str = "extract", every: float = 30.0):
        self.log, self.what, self.every = log, what, every
        self.rows = 0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True)

    def _report(self) -> None:
        while not self._stop.wait(self.every):
            elapsed = time.monotonic() - self._started
            if self.rows:
                self.log.info(f"{self.what}: {self.rows:,} rows read after {elapsed:.0f} s")
            else:
                self.log.info(f"{self.what}: no row yet after {elapsed:.0f} s (the source may be waiting for a "
                              "lock; SOURCE_LOCK_TIMEOUT and SOURCE_STATEMENT_TIMEOUT bound the wait)")

    def restart(self) -> None:
        self.rows = 0

    def __enter__(self) -> "StreamProgress":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.log.info(f"{self.what}: {self.rows:,} rows read in {time.monotonic() - self._started:.1f} s")


# The largest block the reader grows to: a PostgreSQL value is at most 1 GB.
MAX_BLOCK_SIZE = 1 << 30
_STRADDLING = "straddling object straddles two block boundaries"


class _RowLargerThanBlock(Exception):
    """pyarrow met a row that does not fit in two blocks: the stream is read again with larger blocks."""


def copy_query(conn, sql: str, params: dict | tuple | None, schema: pa.Schema,
               finish=None, block_size: int = BLOCK_SIZE, progress: StreamProgress | None = None) -> pa.Table:
    """``COPY (sql) TO STDOUT`` as an Arrow table of ``schema`` plus ``invalid_encoding``, in bounded blocks.

    No Python object per row or value: for row counts where psycopg2's ``fetchall`` would build millions of
    tuples. Text that is not UTF-8 never fails the read: its bad bytes become U+FFFD and ``invalid_encoding``
    names the row's columns that held them (see ``take_marks``). ``finish`` may turn each decoded batch into
    its final types as it arrives (its output schema is then the table's). ``progress`` counts the rows read.

    Any value PostgreSQL can return is read: pyarrow parses a row that spans at most two blocks, so a larger
    one (a 2 MB product name) makes the query run again, in the same snapshot, with blocks eight times as
    large, up to ``MAX_BLOCK_SIZE``. That costs a second read of the stream only when such a row exists.
    """
    with conn.cursor() as cur:
        query = cur.mogrify(sql, params).decode()
    copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
    while True:
        try:
            return _read_copy(conn, copy_sql, schema, finish, block_size, progress)
        except _RowLargerThanBlock:
            if block_size >= MAX_BLOCK_SIZE:
                raise ExtractParseError(f"a row of the source is larger than {MAX_BLOCK_SIZE >> 20} MiB, the "
                                        "largest block the extract reads") from None
            larger = min(block_size * 8, MAX_BLOCK_SIZE)
            (progress.log if progress else _log).warning(
                f"a row of the source is larger than two blocks of {block_size >> 10} KiB; reading the query again "
                f"with blocks of {larger >> 10} KiB")
            block_size = larger
            if progress:
                progress.restart()


def _read_copy(conn, copy_sql: str, schema: pa.Schema, finish, block_size: int,
               progress: StreamProgress | None) -> pa.Table:
    parse_schema, text = _as_bytes(schema), frozenset(f.name for f in schema if pa.types.is_string(f.type))
    read_fd, write_fd = os.pipe()
    source, sink = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    errors: list[BaseException] = []
    writer = threading.Thread(target=_copy_into, args=(conn, copy_sql, sink, errors), daemon=True)
    writer.start()
    batches = []
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=block_size),
            # a NULL in a one-column result is an empty line
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                # NULL is an unquoted empty field, and nothing else: pyarrow would also read NA, N/A, null,
                # NaN... as null, and PostgreSQL quotes none of them (Namibia's country code is NA).
                column_types=parse_schema, true_values=["t"], false_values=["f"], null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        for batch in reader:
            batch = _decoded(batch, text)
            batches.append(finish(batch) if finish else batch)
            if progress:
                progress.rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        if _STRADDLING in str(exc):
            raise _RowLargerThanBlock() from exc
        if "Empty CSV file" not in str(exc) or errors:
            if errors:
                raise errors[0] from None
            named = _named(exc, schema)
            if named is exc:
                raise
            raise named from exc
    finally:
        source.close()
        writer.join()
    if errors:
        raise errors[0]
    if not batches:  # no rows: the same columns and types
        empty = _decoded(pa.RecordBatch.from_pylist([], schema=parse_schema), text)
        batches = [finish(empty) if finish else empty]
    return pa.Table.from_batches(batches)


def take_marks(table: pa.Table) -> tuple[pa.Table, int]:
    """A ``copy_query`` table without its ``invalid_encoding`` column, and how many values had bytes replaced."""
    marks = table[INVALID_ENCODING]
    replaced = 0
    if marks.null_count < len(marks):  # a clean read (the rule) is not split
        replaced = pc.sum(pc.list_value_length(pc.split_pattern(marks, ";"))).as_py()
    return table.drop_columns([INVALID_ENCODING]), replaced


def counted_frame(table: pa.Table) -> pd.DataFrame:
    """A ``copy_query`` table as pandas, with the count of replaced values in ``attrs``: readers keep returning
    a frame (some are called through resources that pass it on), and the callers that report the count take
    it with ``take_replaced_count``."""
    table, replaced = take_marks(table)
    frame = table.to_pandas()
    frame.attrs[INVALID_ENCODING_VALUES] = replaced
    return frame


def take_replaced_count(frame: pd.DataFrame) -> int:
    """The count of values whose bytes a reader replaced (0 when the frame carries none), taken off ``frame``:
    pyarrow would otherwise copy it into the pandas metadata of every table stored from the frame."""
    return int(frame.attrs.pop(INVALID_ENCODING_VALUES, 0))


def stream_week(conn, start: datetime, end: datetime, block_size: int = BLOCK_SIZE,
                schema: SourceSchema | None = None, log=None, progress_seconds: float = 30.0) -> pa.Table:
    """The week's completed transactions as an Arrow table, streamed in bounded blocks (the source's schema
    is checked first unless given). ``log`` (a step's ``context.log``) receives the rows read so far every
    ``progress_seconds`` while the stream runs, and the total at its end."""
    schema = schema or read_source_schema(conn)
    bounds = {"start": schema.bound("transactions", "timestamp", start),
              "end": schema.bound("transactions", "timestamp", end)}
    with StreamProgress(log or _log, "extract", progress_seconds) as progress:
        return copy_query(conn, week_extract_sql(schema), bounds, ARROW_SCHEMA, finish=_finish,
                          block_size=block_size, progress=progress)


def week_version_sql(schema: SourceSchema) -> str:
    """The count of the week's completed transactions and a checksum of what the pipeline reads of them: a
    refund, a status change, an edited amount or a late row changes the week's version.

    ``hashtextextended`` is the hash of PostgreSQL's hash partitioning, kept stable across versions for that
    reason; md5 costs several times as much (and FIPS servers refuse it). One week per query: grouping several
    weeks in one query cost more per row than the week alone."""
    row = (f"concat_ws('|', {schema.text('t', 'transaction_id')}, {schema.text('t', 'customer_id')}, "
           f"{schema.text('t', 'product_id')}, t.amount::text, t.currency::text, t.\"timestamp\"::text)")
    return f"""
SELECT count(*), coalesce(sum(hashtextextended({row}, 0)::numeric), 0)::text
FROM transactions t
WHERE {_week_filter("t")}
"""


def week_version(conn, start: datetime, end: datetime, schema: SourceSchema | None = None) -> str:
    """``rows:checksum`` of the week [start, end) as the source holds it now (``0:0`` when empty)."""
    schema = schema or read_source_schema(conn)
    with conn.cursor() as cur:
        cur.execute(week_version_sql(schema), {"start": schema.bound("transactions", "timestamp", start),
                                               "end": schema.bound("transactions", "timestamp", end)})
        n, checksum = cur.fetchone()
    return f"{n}:{checksum}"


EMPTY_WEEK_VERSION = "0:0"


def export_snapshot(conn) -> str:
    """The identifier of the snapshot ``conn``'s open REPEATABLE READ transaction reads: another connection to the
    same server imports it (``SET TRANSACTION SNAPSHOT``) while this transaction stays open."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_export_snapshot()")
        return cur.fetchone()[0]


class _VersionAlongside:
    """``week_version`` in a thread of its own, on a connection that imports the extract's snapshot.

    ``unavailable`` holds why that connection could not be opened or could not import the snapshot (then the
    caller computes the version on its own connection); ``error`` a failure of the version query itself, as
    the connection's context manager classified it. ``stop`` cancels a query still running and joins: the
    thread never outlives the extract, and its connection is closed by then."""

    def __init__(self, connect_snapshot, snapshot: str, start: datetime, end: datetime, schema: SourceSchema):
        self._connect, self._snapshot, self._args = connect_snapshot, snapshot, (start, end, schema)
        self.version: str | None = None
        self.unavailable: BaseException | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._conn = None  # the connection while its query may run: what ``cancel`` interrupts
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="week-version", daemon=True)

    def _run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                try:
                    other = stack.enter_context(self._connect(self._snapshot))
                except Exception as exc:  # no second connection on the snapshot: not the version's failure
                    self.unavailable = exc
                    return
                with self._lock:
                    if self._stopping:
                        return
                    self._conn = other
                try:
                    self.version = week_version(other, *self._args)
                finally:
                    with self._lock:  # before the connection closes: ``cancel`` never meets a closed one
                        self._conn = None
        except BaseException as exc:  # re-raised by ``result``
            self.error = exc

    def start(self) -> "_VersionAlongside":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Interrupt the version and wait for the thread (its connection is then closed). A cancel that reaches
        the server between two statements does nothing, so it is sent again until the thread has ended."""
        with self._lock:
            self._stopping = True
        while self._thread.is_alive():
            with self._lock:
                if self._conn is not None:
                    try:
                        self._conn.cancel()
                    except Exception:  # the query ended meanwhile; the join below sees the thread end
                        pass
            self._thread.join(0.1)

    def result(self) -> str | None:
        """The version, or None when no second connection was had; raises the version query's failure."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.version


def stream_week_versioned(conn, start: datetime, end: datetime, connect_snapshot, schema: SourceSchema,
                          log=None, progress_seconds: float = 30.0,
                          block_size: int = BLOCK_SIZE) -> tuple[pa.Table, str]:
    """``stream_week`` and ``week_version`` of one snapshot, the version computed while the rows stream.

    ``conn`` is in a REPEATABLE READ transaction (``PostgresSource.connect``); its snapshot is exported, and
    ``connect_snapshot(snapshot_id)`` opens (as a context manager) a second connection to the same server that
    imports it (``PostgresSource.connect_beside``), so the version describes exactly the rows read whatever
    commits meanwhile. The version query runs there, in a thread, concurrently with the COPY: the extract costs
    the longer of the two, not their sum. Its failure (a lock or statement timeout) fails the extract as it
    would on ``conn``; a failure of the extract stops the version's query and thread. If the second connection
    cannot be had (refused, too many connections, a snapshot that server does not know), the version is
    computed on ``conn`` after the rows, in the same snapshot, and a warning says so.
    """
    log = log or _log
    alongside = _VersionAlongside(connect_snapshot, export_snapshot(conn), start, end, schema).start()
    try:
        table = stream_week(conn, start, end, block_size=block_size, schema=schema, log=log,
                            progress_seconds=progress_seconds)
        version = alongside.result()
    finally:
        alongside.stop()
    if version is None:
        reason = str(alongside.unavailable).strip().splitlines()[0] if str(alongside.unavailable).strip() else \
            type(alongside.unavailable).__name__
        log.warning(f"no second connection on the extract's snapshot ({reason}); the week's version is computed "
                    "after the rows, on the extract's connection")
        version = week_version(conn, start, end, schema)
    return table, version


def excluded_statuses_sql() -> str:
    """The week's rows the extract leaves out, per status as the source spells it (NULL included)."""
    return f"""
SELECT t.status::text AS status, count(*) AS n FROM transactions t
WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s AND NOT coalesce({completed_sql("t")}, false)
GROUP BY 1 ORDER BY 2 DESC, 1
"""


def customer_records_sql(schema: SourceSchema) -> str:
    """Over the customers table (ids compared trimmed): the records beyond one per id (a table without a primary
    key holding a customer twice), and the ids that one standardised id (trimmed, upper-case) stands for beyond
    the first (``C0000001`` and ``c0000001``), with up to five such standardised ids. One pass over the
    customers, whatever the week's size."""
    cid = trimmed_sql(schema.text("c", "customer_id"))
    return f"""
WITH ids AS (SELECT {cid} AS id, count(*) AS records FROM customers c WHERE {cid} IS NOT NULL GROUP BY 1),
keys AS (SELECT upper(id) AS k, count(*) AS ids, sum(records) AS records FROM ids GROUP BY 1)
SELECT coalesce(sum(records - ids), 0)::int8 AS duplicate_records, coalesce(sum(ids - 1), 0)::int8 AS collisions,
       array_to_string((array_agg(k ORDER BY k) FILTER (WHERE ids > 1))[1:5], ' ') AS examples
FROM keys
"""


EXCLUDED_STATUSES_SCHEMA = pa.schema([("status", pa.string()), ("n", pa.int64())])
CUSTOMER_RECORDS_SCHEMA = pa.schema([("duplicate_records", pa.int64()), ("collisions", pa.int64()),
                                     ("examples", pa.string())])


@dataclass(frozen=True)
class SourceFindings:
    """What the source holds that is not the transactions' fault, found beside the week's extract."""

    excluded_statuses: dict[str, int]  # rows of the week left out, per status ('(null)' for a NULL status)
    duplicate_customer_records: int  # DUPLICATE_CUSTOMER_RECORD: customers' records beyond one per id
    id_collisions: int  # ID_COLLISION: distinct customer ids that standardise to one id, beyond the first
    id_collision_examples: list[str]  # up to five such standardised ids

    def report(self) -> dict:
        """The findings as the quality report shows them, under the codes the failure catalogue uses."""
        return {"DUPLICATE_CUSTOMER_RECORD": self.duplicate_customer_records, "ID_COLLISION": self.id_collisions,
                "excluded_statuses": self.excluded_statuses}


def week_source_findings(conn, start: datetime, end: datetime, schema: SourceSchema) -> SourceFindings:
    """The week's excluded statuses and the customers table's duplicate and colliding records, in two small
    queries: a GROUP BY over the week's rows (through the timestamp index, like the version's count) and one
    over the customers. Read through ``copy_query``, so a status or id that is not UTF-8 cannot fail
    the week."""
    bounds = {"start": schema.bound("transactions", "timestamp", start),
              "end": schema.bound("transactions", "timestamp", end)}
    statuses, _ = take_marks(copy_query(conn, excluded_statuses_sql(), bounds, EXCLUDED_STATUSES_SCHEMA))
    records, _ = take_marks(copy_query(conn, customer_records_sql(schema), None, CUSTOMER_RECORDS_SCHEMA))
    row = records.to_pylist()[0]
    return SourceFindings(
        excluded_statuses={("(null)" if r["status"] is None else r["status"]): r["n"] for r in statuses.to_pylist()},
        duplicate_customer_records=row["duplicate_records"], id_collisions=row["collisions"],
        id_collision_examples=(row["examples"] or "").split())


def version_rows(version: str | None) -> int | None:
    """The row count of a week's version (``rows:checksum``), or None when there is none."""
    return int(version.split(":", 1)[0]) if version else None


def shrinkage(loaded: str | None, now: str, limit: float) -> str | None:
    """Why a week whose source now holds far fewer completed rows than when it was loaded must not be re-loaded
    without an operator (the source archived or purged it), or None. Sharply: to zero, or by more than ``limit``
    (a share, SOURCE_SHRINK_LIMIT) of the rows loaded."""
    before, after = version_rows(loaded), version_rows(now)
    if not before or after is None or after >= before:
        return None
    share = (before - after) / before
    if after == 0 or share > limit:
        return (f"the source now holds {after} completed transactions of the week, {before} when it was loaded "
                f"(-{share:.0%}, more than SOURCE_SHRINK_LIMIT={limit:g})")
    return None


def completed_ids_sql(schema: SourceSchema) -> str:
    """The completed transactions among an array of (trimmed) ids within a time range: (transaction_id, UTC
    timestamp). Through the timestamp index; the range is the weeks the warehouse holds those ids in."""
    tid = trimmed_sql(schema.text("t", "transaction_id"))
    return f"""
SELECT {tid} AS transaction_id, {schema.utc("t", "transactions", "timestamp")} AS "timestamp"
FROM transactions t
WHERE {_week_filter("t")} AND {tid} = ANY(%(ids)s::text[])
"""


COMPLETED_IDS_SCHEMA = pa.schema([("transaction_id", pa.string()), ("timestamp", pa.timestamp("us"))])


def completed_ids(conn, schema: SourceSchema, ids: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """Where the source holds these transaction ids completed in [start, end): one row per source row, UTC
    timestamps. Used for the few ids another loaded week holds, to tell a moved transaction (gone from that week)
    from a reused id (still there)."""
    params = {"ids": list(ids), "start": schema.bound("transactions", "timestamp", start),
              "end": schema.bound("transactions", "timestamp", end)}
    found, _ = take_marks(copy_query(conn, completed_ids_sql(schema), params, COMPLETED_IDS_SCHEMA))
    frame = found.to_pandas()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC")
    return frame


def to_raw_frame(table: pa.Table) -> pd.DataFrame:
    """The extract in the pandas shape of ``RawTransactions`` (UTC timestamps, object strings).

    The Arrow buffers are released column by column while pandas takes them (``self_destruct``), so the
    week is not held twice; the table must not be used afterwards.
    """
    return table.to_pandas(split_blocks=True, self_destruct=True)


CATEGORY_PRICES_SQL = "SELECT category::text, avg(price)::float8 AS avg_price FROM products GROUP BY category"
CATEGORY_PRICES_SCHEMA = pa.schema([("category", pa.string()), ("avg_price", pa.float64())])


def category_prices(conn) -> pd.DataFrame:
    """Average catalogue price per category (replaced values counted as ``counted_frame`` counts them).

    Read through ``copy_query``, not a cursor: psycopg2 decodes fetched text in the client encoding, and a
    SQL_ASCII database's category in Latin-1 (or any non-ASCII one) raised UnicodeDecodeError. Decoded as the
    week's extract decodes it, a category matches the transactions' spelling of it."""
    return counted_frame(copy_query(conn, CATEGORY_PRICES_SQL, None, CATEGORY_PRICES_SCHEMA))


def known_customers_sql(schema: SourceSchema) -> str:
    """The database's customers among an array of trimmed ids (integer or text ids alike; case kept)."""
    return f"""
SELECT {schema.text("c", "customer_id")} AS customer_id, {schema.utc("c", "customers", "created_at")} AS signup_date,
       c.country::text AS country, c.segment::text AS segment
FROM customers c JOIN unnest(%s::text[]) AS wanted(customer_id)
  ON trim({schema.text("c", "customer_id")}) = wanted.customer_id
"""


KNOWN_CUSTOMERS_SCHEMA = pa.schema([("customer_id", pa.string()), ("signup_date", pa.timestamp("us")),
                                    ("country", pa.string()), ("segment", pa.string())])


def known_customers(conn, schema: SourceSchema, ids: list[str]) -> pd.DataFrame:
    """The customers among ``ids`` (sent as one array parameter), answered through COPY into Arrow: a week
    can name a million, and no Python tuple is built per row. ``signup_date`` in UTC; text that is not UTF-8
    is kept with U+FFFD and counted (``take_replaced_count``)."""
    known = counted_frame(copy_query(conn, known_customers_sql(schema), (ids,), KNOWN_CUSTOMERS_SCHEMA))
    known["signup_date"] = known["signup_date"].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return known


PRODUCTS_SNAPSHOT_SCHEMA = pa.schema([("product_id", pa.string()), ("name", pa.string()), ("category", pa.string()),
                                      ("price", pa.float64())])


def products_snapshot(conn, schema: SourceSchema) -> pd.DataFrame:
    """The product catalogue as it is now (ids trimmed, as the extract trims them): the weekly snapshot that
    the product dimension versions. Streamed through COPY, whatever the catalogue's size. A name or category
    that is not UTF-8 is kept with U+FFFD and counted (``take_replaced_count``): one such product must not
    stop the week."""
    sql = (f"SELECT trim({schema.text('p', 'product_id')}) AS product_id, p.name::text AS name, "
           f"p.category::text AS category, p.price::float8 AS price FROM products p "
           f"WHERE p.product_id IS NOT NULL ORDER BY 1")
    return counted_frame(copy_query(conn, sql, None, PRODUCTS_SNAPSHOT_SCHEMA))
