"""What the source holds that is not the week's transactions' fault, found beside the week's
extract: the week's rows of other statuses, customers' records beyond one per id, ids that differ
only by case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from customer_assets.sources.copy_stream import copy_query, take_marks
from customer_assets.sources.extract import completed_sql, trimmed_sql
from customer_assets.sources.source_schema import SourceSchema


def excluded_statuses_sql() -> str:
    """The week's rows the extract leaves out, per status as the source spells it (NULL
    included)."""
    return f"""
SELECT t.status::text AS status, count(*) AS n FROM transactions t
WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s AND NOT coalesce({completed_sql("t")}, false)
GROUP BY 1 ORDER BY 2 DESC, 1
"""


def customer_records_sql(schema: SourceSchema) -> str:
    """Over the customers table (ids compared trimmed): the records beyond one per id (a table
    without a primary key holding a customer twice), and the ids that one standardised id (trimmed,
    upper-case) stands for beyond the first (``C0000001`` and ``c0000001``), with up to five such
    standardised ids. One pass over the customers, whatever the week's size."""
    cid = trimmed_sql(schema.text("c", "customer_id"))
    return f"""
WITH ids AS (SELECT {cid} AS id, count(*) AS records FROM customers c WHERE {cid} IS NOT NULL GROUP BY 1),
keys AS (SELECT upper(id) AS k, count(*) AS ids, sum(records) AS records FROM ids GROUP BY 1)
SELECT coalesce(sum(records - ids), 0)::int8 AS duplicate_records, coalesce(sum(ids - 1), 0)::int8 AS collisions,
       array_to_string((array_agg(k ORDER BY k) FILTER (WHERE ids > 1))[1:5], ' ') AS examples
FROM keys
"""


EXCLUDED_STATUSES_SCHEMA = pa.schema([("status", pa.string()), ("n", pa.int64())])
CUSTOMER_RECORDS_SCHEMA = pa.schema(
    [("duplicate_records", pa.int64()), ("collisions", pa.int64()), ("examples", pa.string())]
)


@dataclass(frozen=True)
class SourceFindings:
    """What the source holds that is not the transactions' fault, found beside the week's
    extract."""

    excluded_statuses: dict[
        str, int
    ]  # rows of the week left out, per status ('(null)' for a NULL status)
    duplicate_customer_records: (
        int  # DUPLICATE_CUSTOMER_RECORD: customers' records beyond one per id
    )
    id_collisions: (
        int  # ID_COLLISION: distinct customer ids that standardise to one id, beyond the first
    )
    id_collision_examples: list[str]  # up to five such standardised ids

    def report(self) -> dict:
        """The findings as the quality report shows them, under the codes the failure catalogue
        uses."""
        return {
            "DUPLICATE_CUSTOMER_RECORD": self.duplicate_customer_records,
            "ID_COLLISION": self.id_collisions,
            "excluded_statuses": self.excluded_statuses,
        }


def week_source_findings(
    conn, start: datetime, end: datetime, schema: SourceSchema
) -> SourceFindings:
    """The week's excluded statuses and the customers table's duplicate and colliding records, in
    two small queries: a GROUP BY over the week's rows (through the timestamp index, like the
    version's count) and one over the customers. Read through ``copy_query``, so a status or id that
    is not UTF-8 cannot fail the week."""
    bounds = {
        "start": schema.bound("transactions", "timestamp", start),
        "end": schema.bound("transactions", "timestamp", end),
    }
    statuses, _ = take_marks(
        copy_query(conn, excluded_statuses_sql(), bounds, EXCLUDED_STATUSES_SCHEMA)
    )
    records, _ = take_marks(
        copy_query(conn, customer_records_sql(schema), None, CUSTOMER_RECORDS_SCHEMA)
    )
    row = records.to_pylist()[0]
    return SourceFindings(
        excluded_statuses={
            ("(null)" if r["status"] is None else r["status"]): r["n"] for r in statuses.to_pylist()
        },
        duplicate_customer_records=row["duplicate_records"],
        id_collisions=row["collisions"],
        id_collision_examples=(row["examples"] or "").split(),
    )
