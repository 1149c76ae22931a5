"""The rows to load into the DuckDB warehouse as the relation ``incoming``, a part at a time: a
frame a slice at a time through Arrow, a ``StoredFrame`` read by DuckDB straight from its Parquet
file. Either way timestamps arrive in microseconds, as the warehouses keep them. And the rows a
``CarriedWeek`` carries, copied within the warehouse (``carry_rows``).
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pandas as pd
import pyarrow as pa

from customer_assets.frames import CarriedWeek, StoredFrame, slices
from customer_assets.io_managers.warehouse import carried_from, same_key
from customer_assets.logic.duckdb_memory import literal, quoted


def to_arrow(frame: pd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """The frame as Arrow (DuckDB scans Arrow strings natively, pandas objects one by one), with
    microsecond timestamps: warehouses keep microseconds, and DuckDB reads zoned nanoseconds back
    naive."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            micros = table.column(i).cast(pa.timestamp("us", tz=field.type.tz), safe=False)
            table = table.set_column(i, field.name, micros)
    return table


def incoming_parts(
    con: duckdb.DuckDBPyConnection, obj: pd.DataFrame | StoredFrame
) -> Iterator[None]:
    """Makes the relation ``incoming`` each part of the rows to load in turn, yielding after each.

    A frame goes a slice at a time (its Arrow copy is one slice, with the whole frame's types); a
    StoredFrame is read by DuckDB from its Parquet file as the insert runs, its nanosecond
    timestamps cast to microseconds (DuckDB rounds where a frame's conversion truncates; sources
    keep microseconds, so no value the pipeline produces differs).
    """
    if isinstance(obj, pd.DataFrame):
        schema = pa.Schema.from_pandas(obj, preserve_index=False)
        for part in slices(obj):
            con.register("incoming", to_arrow(part, schema))
            yield
            con.unregister("incoming")
        return
    columns = []
    for field in obj.arrow_schema:
        name = quoted(field.name)
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            kind = "TIMESTAMPTZ" if field.type.tz else "TIMESTAMP"
            columns.append(f"CAST({name} AS {kind}) AS {name}")
        else:
            columns.append(name)
    con.execute(
        f"CREATE TEMP VIEW incoming AS SELECT {', '.join(columns)} FROM read_parquet({literal(obj.path)})"
    )
    yield
    con.execute("DROP VIEW incoming")


def carry_rows(
    con: duckdb.DuckDBPyConnection, qualified: str, column: str, window: tuple, carry: CarriedWeek
) -> int:
    """Copies into the week the rows of the carried partition whose key the week does not hold
    (``CarriedWeek``), with the week's start as their partition value; how many."""
    start, end = window
    origin = carried_from(carry, start)
    if origin is None:
        return 0
    col = quoted(column)
    same = same_key(carry.key, "n", "c", quoted)
    kind = "TIMESTAMP" if start.tzinfo is None else "TIMESTAMPTZ"
    return con.execute(
        f"INSERT INTO {qualified} BY NAME SELECT * REPLACE (CAST(? AS {kind}) AS {col}) "
        f"FROM {qualified} AS c WHERE c.{col} >= ? AND c.{col} < ? AND NOT EXISTS "
        f"(SELECT 1 FROM {qualified} AS n WHERE n.{col} >= ? AND n.{col} < ? AND {same})",
        [start, origin, origin + (end - start), start, end],
    ).fetchone()[0]
