"""The source's customers and products as the pipeline reads them beside the transactions: the
customers a week names, the product catalogue as it is now, and the average price per category."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from customer_assets.sources.copy_stream import copy_query, counted_frame
from customer_assets.sources.source_schema import SourceSchema

CATEGORY_PRICES_SQL = (
    "SELECT category::text, avg(price)::float8 AS avg_price FROM products GROUP BY category"
)
CATEGORY_PRICES_SCHEMA = pa.schema([("category", pa.string()), ("avg_price", pa.float64())])


def category_prices(conn) -> pd.DataFrame:
    """Average catalogue price per category (replaced values counted as ``counted_frame`` counts
    them).

    Read through ``copy_query``, not a cursor: psycopg2 decodes fetched text in the client encoding,
    and a SQL_ASCII database's category in Latin-1 (or any non-ASCII one) raised UnicodeDecodeError.
    Decoded as the week's extract decodes it, a category matches the transactions' spelling of
    it."""
    return counted_frame(copy_query(conn, CATEGORY_PRICES_SQL, None, CATEGORY_PRICES_SCHEMA))


def known_customers_sql(schema: SourceSchema) -> str:
    """The database's customers among an array of trimmed ids (integer or text ids alike; case
    kept)."""
    return f"""
SELECT {schema.text("c", "customer_id")} AS customer_id, {schema.utc("c", "customers", "created_at")} AS signup_date,
       c.country::text AS country, c.segment::text AS segment
FROM customers c JOIN unnest(%s::text[]) AS wanted(customer_id)
  ON trim({schema.text("c", "customer_id")}) = wanted.customer_id
"""


KNOWN_CUSTOMERS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("signup_date", pa.timestamp("us")),
        ("country", pa.string()),
        ("segment", pa.string()),
    ]
)


def known_customers(conn, schema: SourceSchema, ids: list[str]) -> pd.DataFrame:
    """The customers among ``ids`` (sent as one array parameter), answered through COPY into Arrow:
    a week can name a million, and no Python tuple is built per row. ``signup_date`` in UTC; text
    that is not UTF-8 is kept with U+FFFD and counted (``take_replaced_count``)."""
    known = counted_frame(
        copy_query(conn, known_customers_sql(schema), (ids,), KNOWN_CUSTOMERS_SCHEMA)
    )
    known["signup_date"] = known["signup_date"].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return known


PRODUCTS_SNAPSHOT_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
    ]
)


def products_snapshot(conn, schema: SourceSchema) -> pd.DataFrame:
    """The product catalogue as it is now (ids trimmed, as the extract trims them): the weekly
    snapshot that the product dimension versions. Streamed through COPY, whatever the catalogue's
    size. A name or category that is not UTF-8 is kept with U+FFFD and counted
    (``take_replaced_count``): one such product must not stop the week."""
    sql = (
        f"SELECT trim({schema.text('p', 'product_id')}) AS product_id, p.name::text AS name, "
        f"p.category::text AS category, p.price::float8 AS price FROM products p "
        f"WHERE p.product_id IS NOT NULL ORDER BY 1"
    )
    return counted_frame(copy_query(conn, sql, None, PRODUCTS_SNAPSHOT_SCHEMA))
