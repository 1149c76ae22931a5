"""DuckDB as this project uses it inside a step: quoting, and a deterministic in-memory connection."""

from __future__ import annotations

import duckdb


def quoted(name: str) -> str:
    """``name`` as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: object) -> str:
    """``text`` (a path, usually) as a DuckDB string literal, for the places that take no parameter."""
    return "'" + str(text).replace("'", "''") + "'"


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory connection on one thread, in UTC: each group then aggregates its rows in row order, so a
    rerun gives the same bits, and timestamps come back in UTC whatever the machine's zone."""
    con = duckdb.connect(config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    return con
