"""DuckDB as this project uses it inside a step: quoting, and a deterministic in-memory connection."""

from __future__ import annotations

import duckdb


def quoted(name: str) -> str:
    """``name`` as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: object) -> str:
    """``text`` (a path, usually) as a DuckDB string literal, for the places that take no parameter."""
    return "'" + str(text).replace("'", "''") + "'"


def connect(database: str = ":memory:", read_only: bool = False, threads: int | None = 1
            ) -> duckdb.DuckDBPyConnection:
    """A connection in UTC, so that timestamps come back in UTC whatever the machine's zone; by default in
    memory on one thread, where each group aggregates its rows in row order and a rerun gives the same bits
    (``threads=None``: DuckDB's default, for the warehouse file)."""
    con = duckdb.connect(database, read_only=read_only, config={} if threads is None else {"threads": threads})
    con.execute("SET TimeZone = 'UTC'")
    return con
