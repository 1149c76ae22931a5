"""What the source database's tables look like, checked before anything is read.

Real schemas vary: ids may be integers or text, timestamps with or without a time zone, amounts
numeric or floating point. The extract adapts to those; a missing column or a type it cannot use
fails at once, naming the table and column, instead of failing later inside a query (and being
retried for minutes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

TEXT = ("text", "character varying", "character", "USER-DEFINED", "citext")
INTEGER = ("smallint", "integer", "bigint")
NUMBER = (*INTEGER, "numeric", "real", "double precision")
TIMESTAMP = ("timestamp with time zone", "timestamp without time zone", "date")
ID = (*TEXT, *INTEGER, "numeric", "uuid")

# table -> column -> the types it may have, and what the pipeline calls such a value.
REQUIRED: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "transactions": {
        "transaction_id": (ID, "an id (text, integer or uuid)"),
        "customer_id": (ID, "an id (text, integer or uuid)"),
        "product_id": (ID, "an id (text, integer or uuid)"),
        "amount": (NUMBER, "a number"),
        "currency": (TEXT, "text"),
        "timestamp": (TIMESTAMP, "a timestamp"),
        "status": (TEXT, "text"),
    },
    "customers": {
        "customer_id": (ID, "an id (text, integer or uuid)"),
        "created_at": (TIMESTAMP, "a timestamp"),
        "country": (TEXT, "text"),
        "segment": (TEXT, "text"),
    },
    "products": {
        "product_id": (ID, "an id (text, integer or uuid)"),
        "name": (TEXT, "text"),
        "category": (TEXT, "text"),
        "price": (NUMBER, "a number"),
    },
}

# Each table as the extract's queries resolve it (the search path), with its columns' types. The
# catalog shows a table's columns whatever the user's privileges, so a missing grant is reported as
# such by the query.
COLUMNS_SQL = """
SELECT w.name, a.attname,
       CASE WHEN ty.typtype = 'e' THEN 'USER-DEFINED'
            WHEN ty.typtype = 'd' THEN format_type(ty.typbasetype, NULL)
            ELSE format_type(a.atttypid, NULL) END
FROM unnest(%(tables)s::text[]) AS w(name)
JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(w.name)) AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
"""


class SourceSchemaError(dg.Failure):
    """The source's tables cannot be read as the pipeline needs: no retry can fix that."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


@dataclass(frozen=True)
class SourceSchema:
    """The types of the required columns, and how to read them as the pipeline's types."""

    types: dict[tuple[str, str], str]
    timezone: str = "UTC"

    def utc(self, alias: str, table: str, column: str) -> str:
        """SQL for ``alias.column`` as a naive UTC timestamp; naive source values are in the source
        time zone."""
        ref = f'{alias}."{column}"'
        kind = self.types[(table, column)]
        if kind == "timestamp with time zone":
            return f"{ref} AT TIME ZONE 'UTC'"
        zone = self.timezone.replace("'", "''")
        return f"({ref}::timestamp AT TIME ZONE '{zone}') AT TIME ZONE 'UTC'"

    def text(self, alias: str, column: str) -> str:
        return f'{alias}."{column}"::text'

    def is_zoned(self, table: str, column: str) -> bool:
        return self.types[(table, column)] == "timestamp with time zone"

    def bound(self, table: str, column: str, moment: datetime) -> datetime:
        """A UTC bound as the column compares it: naive columns hold wall time of the source time
        zone, so the bound is converted to that wall time (and an index on the column stays
        usable)."""
        if self.is_zoned(table, column):
            return moment
        return moment.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except Exception:
        raise ValueError(
            f"SOURCE_TIMEZONE={name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None
    return name


def read_source_schema(
    conn, timezone: str = "UTC", tables: tuple[str, ...] = tuple(REQUIRED)
) -> SourceSchema:
    """Check that ``tables`` have their required columns with usable types; raise SourceSchemaError
    if not."""
    with conn.cursor() as cur:
        cur.execute(COLUMNS_SQL, {"tables": list(tables)})
        found = {(table, column): kind for table, column, kind in cur.fetchall()}
    present = {table for table, _ in found}
    problems = []
    for table in tables:
        if table not in present:
            problems.append(f"table {table!r} does not exist (or is not on the search path)")
            continue
        for column, (allowed, meaning) in REQUIRED[table].items():
            kind = found.get((table, column))
            if kind is None:
                problems.append(f"column {table}.{column} is missing")
            elif kind not in allowed:
                problems.append(
                    f"column {table}.{column} is {kind}; it must be {meaning} ({', '.join(allowed)})"
                )
    if problems:
        raise SourceSchemaError(
            "The source database cannot be read: "
            + "; ".join(problems)
            + ". Required columns: "
            + "; ".join(f"{t}({', '.join(c)})" for t, c in REQUIRED.items() if t in tables)
        )
    return SourceSchema(types=found, timezone=timezone)
