"""Streaming extract of one week: ``COPY (query) TO STDOUT`` parsed incrementally by pyarrow.

The server formats rows as CSV; a writer thread feeds them through a pipe to pyarrow's streaming CSV
reader, which parses fixed-size blocks (~1 MiB, roughly 8,000 rows). Memory holds the Arrow batches of
the week, never the whole text, and nothing touches the disk.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

# Email, phone and address are never selected: PII minimisation starts in the query.
WEEK_EXTRACT_SQL = """
SELECT t.transaction_id, t.customer_id, c.country, c.segment, t.amount::float8 AS amount, t.currency,
       t."timestamp" AT TIME ZONE 'UTC' AS "timestamp", t.product_id, p.name AS product_name, p.category,
       c.created_at AT TIME ZONE 'UTC' AS customer_created_at,
       c.customer_id IS NOT NULL AS customer_exists, p.product_id IS NOT NULL AS product_exists
FROM transactions t
LEFT JOIN customers c ON c.customer_id = t.customer_id
LEFT JOIN products p ON p.product_id = t.product_id
WHERE t.status = 'completed' AND t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
"""

ARROW_SCHEMA = pa.schema([
    ("transaction_id", pa.string()), ("customer_id", pa.string()), ("country", pa.string()),
    ("segment", pa.string()), ("amount", pa.float64()), ("currency", pa.string()),
    ("timestamp", pa.timestamp("us")), ("product_id", pa.string()), ("product_name", pa.string()),
    ("category", pa.string()), ("customer_created_at", pa.timestamp("us")),
    ("customer_exists", pa.bool_()), ("product_exists", pa.bool_()),
])

# What a parsed block becomes: UTC nanosecond timestamps, flags never null (what pandas will hold).
RAW_ARROW_SCHEMA = pa.schema([
    field.with_type(pa.timestamp("ns", tz="UTC")) if pa.types.is_timestamp(field.type) else field
    for field in ARROW_SCHEMA])

BLOCK_SIZE = 1 << 20


def _finish(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Each block in its final types as it arrives, so no second copy of the week is made later."""
    arrays = [column.cast(pa.timestamp("ns", tz="UTC")) if pa.types.is_timestamp(column.type)
              else pc.fill_null(column, False) if pa.types.is_boolean(column.type) else column
              for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA)


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
    """``COPY (sql) TO STDOUT`` as an Arrow table of ``schema``, streamed in bounded blocks.

    No Python object per row or value: for row counts where psycopg2's ``fetchall`` would build millions of
    tuples. ``finish`` may turn each parsed batch into its final types as it arrives (its output schema is
    then the table's).
    """
    with conn.cursor() as cur:
        query = cur.mogrify(sql, params).decode()
    copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
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
                column_types=schema, true_values=["t"], false_values=["f"], null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        for batch in reader:
            batches.append(finish(batch) if finish else batch)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" not in str(exc) or errors:
            raise errors[0] if errors else exc
    finally:
        source.close()
        writer.join()
    if errors:
        raise errors[0]
    if not batches:  # no rows: the same columns and types
        empty = pa.RecordBatch.from_pylist([], schema=schema)
        batches = [finish(empty) if finish else empty]
    return pa.Table.from_batches(batches)


def stream_week(conn, start: datetime, end: datetime, block_size: int = BLOCK_SIZE) -> pa.Table:
    """The week's completed transactions as an Arrow table, streamed in bounded blocks."""
    return copy_query(conn, WEEK_EXTRACT_SQL, {"start": start, "end": end}, ARROW_SCHEMA, finish=_finish,
                      block_size=block_size)


def to_raw_frame(table: pa.Table) -> pd.DataFrame:
    """The extract in the pandas shape of ``RawTransactions`` (UTC timestamps, object strings).

    The Arrow buffers are released column by column while pandas takes them (``self_destruct``), so the
    week is not held twice; the table must not be used afterwards.
    """
    return table.to_pandas(split_blocks=True, self_destruct=True)


# Per customer and currency, not per transaction: one parallel hash aggregate over the completed history,
# converted to USD afterwards at the week's closing rate (see customer_history). Restricting it to the week's
# customers in SQL (a semi-join) made PostgreSQL give up the parallel plan and cost more than it saved.
CUSTOMER_HISTORY_SQL = """
SELECT customer_id, currency,
       sum(amount::float8) AS amount,
       count(*) AS transaction_count,
       -- epoch seconds: a float is far cheaper for the driver to hand over than a datetime object
       extract(epoch FROM min("timestamp"))::float8 AS first_purchase_at,
       extract(epoch FROM max("timestamp") FILTER (WHERE "timestamp" < %(start)s))::float8
           AS last_purchase_before_week
FROM transactions
WHERE status = 'completed' AND "timestamp" < %(end)s AND amount > 0 AND customer_id IS NOT NULL
GROUP BY customer_id, currency
"""

HISTORY_COLUMNS = ["customer_id", "lifetime_value_usd", "transaction_count", "first_purchase_at",
                   "last_purchase_before_week"]

CATEGORY_PRICES_SQL = "SELECT category, avg(price)::float8 AS avg_price FROM products GROUP BY category"


def customer_history(conn, start: datetime, end: datetime) -> pd.DataFrame:
    """Per customer with completed purchases up to the week's end: USD lifetime value, count, first purchase,
    last purchase before the week.

    Lifetime value is the customer's completed spend up to the week's end, each currency converted at the
    ECB rate of the week's last day (the value as of that date, as a balance would be translated).
    Currencies without a rate are left out, as validation quarantines their transactions.
    """
    from customer_assets.logic.currency import daily_rate_table, supported_currencies

    with conn.cursor() as cur:
        cur.execute(CUSTOMER_HISTORY_SQL, {"start": start, "end": end})
        rows = cur.fetchall()
    if not rows:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    per_currency = pd.DataFrame(rows, columns=["customer_id", "currency", "amount", "transaction_count",
                                               "first_purchase_at", "last_purchase_before_week"])
    closing_day = (end - timedelta(days=1)).date()
    rates = daily_rate_table(closing_day, closing_day, sorted(supported_currencies())).set_index("currency")
    per_currency["usd"] = per_currency["amount"] * per_currency["currency"].map(rates["usd_per_unit"])
    per_currency = per_currency.dropna(subset=["usd"])
    history = per_currency.groupby("customer_id", sort=False).agg(
        lifetime_value_usd=("usd", "sum"), transaction_count=("transaction_count", "sum"),
        first_purchase_at=("first_purchase_at", "min"),
        last_purchase_before_week=("last_purchase_before_week", "max")).reset_index()
    for column in ("first_purchase_at", "last_purchase_before_week"):
        history[column] = pd.to_datetime(history[column], unit="s", utc=True).dt.round("us")
    history["transaction_count"] = history["transaction_count"].astype("int64")
    return history[HISTORY_COLUMNS]


def category_prices(conn) -> pd.DataFrame:
    """Average catalogue price per category."""
    with conn.cursor() as cur:
        cur.execute(CATEGORY_PRICES_SQL)
        return pd.DataFrame(cur.fetchall(), columns=["category", "avg_price"]).astype({"avg_price": float})
