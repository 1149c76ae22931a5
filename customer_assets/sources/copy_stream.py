"""``COPY (query) TO STDOUT`` streamed into Arrow: what every read of the source goes through.

The server formats rows as CSV; a writer thread feeds them through a pipe to pyarrow's streaming CSV
reader, which parses fixed-size blocks (~1 MiB, roughly 8,000 rows). Memory holds the Arrow batches
of the result, never the whole text, and nothing touches the disk; or, given a ``BatchSink``, each
batch goes there as it arrives and memory holds one block. Text that is not UTF-8 is marked,
never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

_log = logging.getLogger(__name__)

# The column ``copy_query`` adds to what it reads: per row, the ``;``-joined names of the columns
# whose bytes were not UTF-8 (null when the row was clean); and the count of such values a reader's
# frame carries.
INVALID_ENCODING = "invalid_encoding"
INVALID_ENCODING_VALUES = "invalid_encoding_values"

BLOCK_SIZE = 1 << 20
# What text is decoded to: the type pandas' string dtype holds (64-bit offsets), so that a frame
# takes the columns as they are, where ``string`` columns are cast once more, chunk by chunk.
TEXT = pa.large_string()


def _decode(column: pa.Array, name: str, bad: dict[int, list[str]]) -> pa.Array:
    """UTF-8 text of a binary column; a value that is not UTF-8 is replaced (U+FFFD) and its row
    noted."""
    try:
        return column.cast(TEXT)
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
        return pa.array(values, TEXT)


def _as_bytes(schema: pa.Schema) -> pa.Schema:
    """How the COPY text is parsed: text as bytes, decoded block by block by ``_decoded``, so that
    one value a SQL_ASCII (or otherwise unchecked) source holds in another encoding is marked
    instead of failing the read."""
    return pa.schema(
        [
            field.with_type(pa.binary()) if pa.types.is_string(field.type) else field
            for field in schema
        ]
    )


def _decoded(batch: pa.RecordBatch, text: frozenset[str]) -> pa.RecordBatch:
    """A parsed block with its ``text`` columns decoded, and ``invalid_encoding`` appended."""
    bad: dict[int, list[str]] = {}
    arrays, fields = [], []
    for field, column in zip(batch.schema, batch.columns, strict=False):
        if field.name in text:
            column, field = _decode(column, field.name, bad), field.with_type(TEXT)
        arrays.append(column)
        fields.append(field)
    marks = (
        [";".join(bad[row]) if row in bad else None for row in range(batch.num_rows)]
        if bad
        else None
    )
    arrays.append(pa.array(marks, TEXT) if marks else pa.nulls(batch.num_rows, TEXT))
    fields.append(pa.field(INVALID_ENCODING, TEXT))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class ExtractParseError(ValueError):
    """A value of the COPY stream that does not parse as its column's type: names the column (and
    the CSV row pyarrow was at), not only pyarrow's column number."""


def _named(exc: pa.ArrowInvalid, schema: pa.Schema) -> Exception:
    message = str(exc)
    match = re.search(r"column #(\d+)", message)
    if not match or int(match.group(1)) >= len(schema):
        return exc
    column = schema.names[int(match.group(1))]
    return ExtractParseError(
        f"the source's column {column!r} holds a value the extract cannot read as "
        f"{schema.field(column).type}: {message}"
    )


def _copy_into(conn, copy_sql: str, sink, errors: list[BaseException]) -> None:
    try:
        with conn.cursor() as cur:
            cur.copy_expert(copy_sql, sink, size=BLOCK_SIZE)
    except BaseException as exc:  # re-raised by the reading side
        errors.append(exc)
    finally:
        # the reading side closed its end (it stopped early): what is left unflushed has no
        # reader, and the broken pipe is already recorded
        with contextlib.suppress(BrokenPipeError):
            sink.close()


class StreamProgress:
    """Logs, every ``every`` seconds while a COPY stream runs, the rows read so far, or that none
    came yet (a query waiting for a lock sends nothing): a long extract is never silent. A thread of
    its own does the logging, because the reading side is blocked while it waits; the final line
    gives the total."""

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
                self.log.info(
                    f"{self.what}: no row yet after {elapsed:.0f} s (the source may be waiting for a "
                    "lock; SOURCE_LOCK_TIMEOUT and SOURCE_STATEMENT_TIMEOUT bound the wait)"
                )

    def restart(self) -> None:
        self.rows = 0

    def __enter__(self) -> StreamProgress:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.log.info(
                f"{self.what}: {self.rows:,} rows read in {time.monotonic() - self._started:.1f} s"
            )


# The largest block the reader grows to: a PostgreSQL value is at most 1 GB.
MAX_BLOCK_SIZE = 1 << 30
_STRADDLING = "straddling object straddles two block boundaries"


class _RowLargerThanBlock(Exception):
    """pyarrow met a row that does not fit in two blocks: the stream is read again with larger
    blocks."""


class BatchSink(Protocol):
    """Where ``copy_query`` puts each finished batch as it arrives: ``write`` it, or ``restart``
    when the stream is read again from its first row (a row larger than two blocks)."""

    def write(self, batch: pa.RecordBatch) -> None: ...

    def restart(self) -> None: ...


class TableSink:
    """The batches kept in memory, for a result read as one table."""

    def __init__(self):
        self.batches: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def restart(self) -> None:
        self.batches.clear()

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches)


def copy_query(
    conn,
    sql: str,
    params: dict | tuple | None,
    schema: pa.Schema,
    finish=None,
    block_size: int = BLOCK_SIZE,
    progress: StreamProgress | None = None,
    into: BatchSink | None = None,
) -> pa.Table | None:
    """``COPY (sql) TO STDOUT`` as an Arrow table of ``schema`` plus ``invalid_encoding``, in
    bounded blocks; with ``into``, each batch goes there as it arrives instead (at least one, empty
    for no rows) and nothing is returned: memory then holds one block, not the result.

    No Python object per row or value: for row counts where psycopg2's ``fetchall`` would build
    millions of tuples. Text that is not UTF-8 never fails the read: its bad bytes become U+FFFD and
    ``invalid_encoding`` names the row's columns that held them (see ``take_marks``). ``finish`` may
    turn each decoded batch into its final types as it arrives (its output schema is then the
    table's). ``progress`` counts the rows read.

    Any value PostgreSQL can return is read: pyarrow parses a row that spans at most two blocks, so
    a larger one (a 2 MB product name) makes the query run again, in the same snapshot, with blocks
    eight times as large, up to ``MAX_BLOCK_SIZE``. That costs a second read of the stream only when
    such a row exists.
    """
    with conn.cursor() as cur:
        query = cur.mogrify(sql, params).decode()
    copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
    batches = into if into is not None else TableSink()
    while True:
        try:
            _read_copy(conn, copy_sql, schema, finish, block_size, progress, batches)
            return batches.table() if into is None else None
        except _RowLargerThanBlock:
            if block_size >= MAX_BLOCK_SIZE:
                raise ExtractParseError(
                    f"a row of the source is larger than {MAX_BLOCK_SIZE >> 20} MiB, the "
                    "largest block the extract reads"
                ) from None
            larger = min(block_size * 8, MAX_BLOCK_SIZE)
            (progress.log if progress else _log).warning(
                f"a row of the source is larger than two blocks of {block_size >> 10} KiB; reading the query again "
                f"with blocks of {larger >> 10} KiB"
            )
            block_size = larger
            batches.restart()
            if progress:
                progress.restart()


def _read_copy(
    conn,
    copy_sql: str,
    schema: pa.Schema,
    finish,
    block_size: int,
    progress: StreamProgress | None,
    into: BatchSink,
) -> None:
    parse_schema = _as_bytes(schema)
    text = frozenset(f.name for f in schema if pa.types.is_string(f.type))
    read_fd, write_fd = os.pipe()
    source, sink = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    errors: list[BaseException] = []
    writer = threading.Thread(target=_copy_into, args=(conn, copy_sql, sink, errors), daemon=True)
    writer.start()
    written = False
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=block_size),
            # a NULL in a one-column result is an empty line
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                # NULL is an unquoted empty field, and nothing else: pyarrow would also read NA,
                # N/A, null, NaN... as null, and PostgreSQL quotes none of them (Namibia's country
                # code is NA).
                column_types=parse_schema,
                true_values=["t"],
                false_values=["f"],
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            batch = _decoded(batch, text)
            into.write(finish(batch) if finish else batch)
            written = True
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
    if not written:  # no rows: the same columns and types
        empty = _decoded(pa.RecordBatch.from_pylist([], schema=parse_schema), text)
        into.write(finish(empty) if finish else empty)


def take_marks(table: pa.Table) -> tuple[pa.Table, int]:
    """A ``copy_query`` table without its ``invalid_encoding`` column, and how many values had bytes
    replaced."""
    marks = table[INVALID_ENCODING]
    replaced = 0
    if marks.null_count < len(marks):  # a clean read (the rule) is not split
        replaced = pc.sum(pc.list_value_length(pc.split_pattern(marks, ";"))).as_py()
    return table.drop_columns([INVALID_ENCODING]), replaced


def counted_frame(table: pa.Table) -> pd.DataFrame:
    """A ``copy_query`` table as pandas, with the count of replaced values in ``attrs``: readers
    keep returning a frame (some are called through resources that pass it on), and the callers that
    report the count take it with ``take_replaced_count``."""
    table, replaced = take_marks(table)
    frame = table.to_pandas()
    frame.attrs[INVALID_ENCODING_VALUES] = replaced
    return frame


def take_replaced_count(frame: pd.DataFrame) -> int:
    """The count of values whose bytes a reader replaced (0 when the frame carries none), taken off
    ``frame``: pyarrow would otherwise copy it into the pandas metadata of every table stored from
    the frame."""
    return int(frame.attrs.pop(INVALID_ENCODING_VALUES, 0))
