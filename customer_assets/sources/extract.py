"""Streaming extract of one week: ``COPY (query) TO STDOUT`` parsed incrementally by pyarrow.

The server formats rows as CSV; a writer thread feeds them through a pipe to pyarrow's streaming CSV
reader, which parses fixed-size blocks (~1 MiB, roughly 8,000 rows). Memory holds the Arrow batches of
the week, never the whole text, and nothing touches the disk.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from customer_assets.sources.source_schema import SourceSchema, read_source_schema


def week_extract_sql(schema: SourceSchema) -> str:
    """The week's completed transactions joined to their customer and product, in the pipeline's types: ids
    as text, timestamps as naive UTC, amounts as float8, whatever the source's own types are.

    Email, phone and address are never selected: PII minimisation starts in the query. Parameters ``start``
    and ``end`` are the week's bounds as the timestamp column compares them (``SourceSchema.bound``).
    """
    return f"""
SELECT {schema.text("t", "transaction_id")} AS transaction_id, {schema.text("t", "customer_id")} AS customer_id,
       c.country::text AS country, c.segment::text AS segment, t.amount::float8 AS amount,
       t.currency::text AS currency, {schema.utc("t", "transactions", "timestamp")} AS "timestamp",
       {schema.text("t", "product_id")} AS product_id, p.name::text AS product_name, p.category::text AS category,
       {schema.utc("c", "customers", "created_at")} AS customer_created_at,
       c.customer_id IS NOT NULL AS customer_exists, p.product_id IS NOT NULL AS product_exists
FROM transactions t
LEFT JOIN customers c ON c.customer_id = t.customer_id
LEFT JOIN products p ON p.product_id = t.product_id
WHERE t.status::text = 'completed' AND t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
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


def copy_query(conn, sql: str, params: dict | tuple | None, schema: pa.Schema,
               finish=None, block_size: int = BLOCK_SIZE) -> pa.Table:
    """``COPY (sql) TO STDOUT`` as an Arrow table of ``schema`` plus ``invalid_encoding``, in bounded blocks.

    No Python object per row or value: for row counts where psycopg2's ``fetchall`` would build millions of
    tuples. Text that is not UTF-8 never fails the read: its bad bytes become U+FFFD and ``invalid_encoding``
    names the row's columns that held them (see ``take_marks``). ``finish`` may turn each decoded batch into
    its final types as it arrives (its output schema is then the table's).
    """
    with conn.cursor() as cur:
        query = cur.mogrify(sql, params).decode()
    copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
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
    except pa.ArrowInvalid as exc:
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
                schema: SourceSchema | None = None) -> pa.Table:
    """The week's completed transactions as an Arrow table, streamed in bounded blocks (the source's schema
    is checked first unless given)."""
    schema = schema or read_source_schema(conn)
    bounds = {"start": schema.bound("transactions", "timestamp", start),
              "end": schema.bound("transactions", "timestamp", end)}
    return copy_query(conn, week_extract_sql(schema), bounds, ARROW_SCHEMA, finish=_finish, block_size=block_size)


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
WHERE t.status::text = 'completed' AND t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
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
    """The database's customers among an array of standardised ids (integer or text ids alike)."""
    return f"""
SELECT {schema.text("c", "customer_id")} AS customer_id, {schema.utc("c", "customers", "created_at")} AS signup_date,
       c.country::text AS country, c.segment::text AS segment
FROM customers c JOIN unnest(%s::text[]) AS wanted(customer_id)
  ON upper(trim({schema.text("c", "customer_id")})) = wanted.customer_id
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
