"""The ERP's customer records: a PostgreSQL table read incrementally by modification time, a week at
a time.

Only the columns identity resolution needs are read (id, email, phone, country, modification time);
the email and phone are hashed by ``logic.identity`` before anything is stored.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow as pa
from psycopg2 import sql

from customer_assets.sources.copy_stream import copy_query, counted_frame

ERP_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("country", pa.string()),
        ("updated_at", pa.timestamp("us")),
    ]
)
EMPTY = pd.DataFrame(
    {
        "customer_id": pd.Series(dtype="str"),
        "email": pd.Series(dtype="str"),
        "phone": pd.Series(dtype="str"),
        "country": pd.Series(dtype="str"),
        "updated_at": pd.Series(dtype="datetime64[ns, UTC]"),
    }
)


def erp_table_exists(conn, schema: str, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{table}"',))
        return bool(cur.fetchone()[0])


def fetch_week(
    conn, schema: str, table: str, columns: dict[str, str], start: datetime, end: datetime
) -> pd.DataFrame:
    """Records modified in [start, end): ``columns`` maps the pipeline's names (customer_id, email,
    phone, country, updated_at) to the ERP table's. The modification time is read as UTC; text that
    is not UTF-8 is kept with U+FFFD and counted (``extract.take_replaced_count``)."""
    c = {name: sql.Identifier(column) for name, column in columns.items()}
    query = (
        sql.SQL(
            "SELECT {id}::text AS customer_id, {email}::text AS email, {phone}::text AS phone, {country}::text AS country,"
            " ({updated}::timestamptz AT TIME ZONE 'UTC') AS updated_at FROM {table}"
            " WHERE {updated} >= %(start)s AND {updated} < %(end)s ORDER BY {updated}, {id}"
        )
        .format(
            id=c["customer_id"],
            email=c["email"],
            phone=c["phone"],
            country=c["country"],
            updated=c["updated_at"],
            table=sql.Identifier(schema, table),
        )
        .as_string(conn)
    )
    frame = counted_frame(copy_query(conn, query, {"start": start, "end": end}, ERP_SCHEMA))
    frame["updated_at"] = frame["updated_at"].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return frame
