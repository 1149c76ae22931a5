"""SQL run inside the warehouse itself (DuckDB locally, BigQuery in production), for the tables that
are maintained where they live instead of being rewritten from Python: the SCD2 dimension, and the
history queries of the carried customer totals.

Statements are written once in the SQL both engines accept; ``@name`` marks a parameter, ``{name}``
a table or quoted column given by the caller, and ``{INT}``, ``{STR}``, ``{BOOL}``, ``{DATETIME}``
the engine's types. Naive datetimes are DuckDB TIMESTAMP / BigQuery DATETIME (UTC wall time, as the
weekly tables store ``week_start``). The engines' resources are dagster-duckdb's ``DuckDBResource``
here and dagster-gcp's ``BigQueryResource`` in ``bigquery_warehouse.py``, which only the production
deployment imports: a local process never loads dagster-gcp and the BigQuery client (about 1 s).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from customer_assets.duck import (
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    ReadCopyFailed,
    anchor_used,
    connect_waiting,
    copy_file,
    file_lock,
    step_anchor,
)
from customer_assets.frames import write_batches
from customer_assets.logic.duckdb_memory import arrow_list, quoted

PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
BATCH_ROWS = 200_000
# A list parameter as DuckDB reads it: an Arrow table registered on the statement's connection
# (``DuckDBWarehouse.unnest``), never a list bound value by value.
_LIST_RELATION = re.compile(r'"__list_([A-Za-z_][A-Za-z0-9_]*)"')


class WarehouseSQL(dg.ConfigurableResource):
    """What the assets that maintain warehouse tables in SQL need: qualified names, a query, a
    statement."""

    def table(self, schema: str, name: str) -> str:
        raise NotImplementedError

    def query(self, sql: str, params: dict | None = None, **names: str) -> pd.DataFrame:
        raise NotImplementedError

    def execute(self, sql: str, params: dict | None = None, **names: str) -> None:
        raise NotImplementedError

    def exists(self, schema: str, name: str) -> bool:
        raise NotImplementedError

    def batches(
        self, sql: str, params: dict | None = None, **names: str
    ) -> Iterator[pa.RecordBatch]:
        """The query's rows as Arrow record batches, as the engine streams them: never one frame.
        A generator holding the engine's connection (DuckDB: the file's lock) until it ends: read it
        within ``contextlib.closing`` so that a reader stopping half-way lets it go at once."""
        raise NotImplementedError

    def to_parquet(self, sql: str, path: Path, params: dict | None = None, **names: str) -> int:
        """The query's rows written to the Parquet file ``path`` a batch at a time, never as one
        frame; the number of rows (0: no file written)."""
        with closing(self.batches(sql, params, **names)) as batches:
            return write_batches(batches, path)

    def quote(self, name: str) -> str:
        return quoted(name)

    def ensure_schema(self, schema: str) -> None:
        raise NotImplementedError

    def table_url(self, schema: str, name: str) -> str:
        """Where a person finds the table: the BigQuery console's page, or the DuckDB file and
        table."""
        return f"{self.table(schema, name)}"

    def publish_read_copy(self, drop_stale: bool = False) -> str | None:
        """Make the warehouse readable by analysts while the next week runs; where they read it
        (None: no copy is needed, the warehouse serves readers itself). ``drop_stale``: should
        this fail, remove the copy published before (it holds customers just erased)."""
        return None

    # The most elements a list parameter holds in one statement (None: no limit); a caller with more
    # asks in parts (``in_parts``).
    list_rows: ClassVar[int | None] = None

    def unnest(self, param: str, alias: str) -> str:
        """A relation of one column ``alias``, a row per element of the list parameter ``param``."""
        return f"(SELECT unnest(@{param}) AS {alias})"

    def in_parts(self, values) -> Iterator:
        """``values`` (a list or an array) in the parts a list parameter of this warehouse holds:
        the whole at once where there is no limit."""
        step = self.list_rows or max(len(values), 1)
        for start in range(0, len(values), step):
            yield values[start : start + step]

    types: ClassVar[dict[str, str]] = {
        "INT": "BIGINT",
        "STR": "VARCHAR",
        "BOOL": "BOOLEAN",
        "DATETIME": "TIMESTAMP",
        "FLOAT": "DOUBLE",
    }

    def render(self, sql: str, names: dict[str, str]) -> str:
        for token, value in {**self.types, **names}.items():
            sql = sql.replace("{" + token + "}", value)
        return sql


class DuckDBWarehouse(DuckDBResource, WarehouseSQL):
    """The local DuckDB file (WAREHOUSE_DUCKDB_PATH), on dagster-duckdb's resource, run in UTC.

    DuckDB allows one process on a file at a time (a reader excludes the writer too): a connection
    waits for another process's lock at most ``lock_timeout_seconds``, then fails naming the holder.
    Analysts read ``read_copy_path``, a copy published after each successful week, so that they
    never block a run."""

    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_SECONDS,
        description="How long a statement waits "
        "for another process's lock on the file (WAREHOUSE_LOCK_TIMEOUT).",
    )
    read_copy_path: str | None = Field(
        default=None,
        description="The analysts' read-only copy, replaced after "
        "each successful week (WAREHOUSE_READ_COPY_PATH); unset: no copy.",
    )
    read_copy_off: bool = Field(
        default=False,
        description="No copy is published (WAREHOUSE_READ_COPY_PATH=off), and one left at "
        "read_copy_path from before is removed at each publish: it would keep customers erased since.",
    )

    @contextmanager
    def get_connection(self):
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.database):
            connect = partial(connect_waiting, self.database, self.lock_timeout_seconds)
            anchor = step_anchor(self.database, connect)
            con = connect() if anchor is None else anchor.cursor()
            try:
                if anchor is not None:
                    con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()
                anchor_used(self.database)

    def table_url(self, schema: str, name: str) -> str:
        readers = None if self.read_copy_off else self.read_copy_path
        return f"{schema}.{name} in {Path(readers or self.database).resolve()}"

    def publish_read_copy(self, drop_stale: bool = False) -> str | None:
        """Checkpoint the file and copy it beside itself, atomically, while holding its lock: no
        writer can change it mid-copy, and a reader of the copy never sees half a week. On a
        filesystem that shares blocks (XFS, btrfs) the copy is a reflink (``copy_file``): its time
        and its disk do not grow with the history the file holds.

        A copy that fails (a full disk) leaves no partial file. The copy published before stays
        (a week behind, never wrong), unless ``drop_stale``: after an erasure, that copy still
        holds the customers erased, and is removed. Turned off, no copy is kept at all."""
        if self.read_copy_off and self.read_copy_path:
            Path(self.read_copy_path).unlink(missing_ok=True)
        if self.read_copy_off or not self.read_copy_path or not Path(self.database).exists():
            return None
        target = Path(self.read_copy_path)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with self.get_connection() as con:
                con.execute("CHECKPOINT")
                copy_file(self.database, tmp)
            os.replace(tmp, target)
        except BaseException as exc:  # the file locked by another process included
            tmp.unlink(missing_ok=True)
            if drop_stale:
                target.unlink(missing_ok=True)
            if isinstance(exc, (OSError, duckdb.Error)):
                raise ReadCopyFailed(target, drop_stale, exc) from exc
            raise
        return str(target.resolve())

    def table(self, schema: str, name: str) -> str:
        return f"{quoted(schema)}.{quoted(name)}"

    def unnest(self, param: str, alias: str) -> str:
        # an Arrow table registered for the statement (``_bound``): binding a list value by value
        # cost 0.4 s for a week's 600k transaction ids, registering it 0.01 s
        return f'(SELECT v AS {alias} FROM "__list_{param}")'

    @contextmanager
    def _bound(self, sql: str, params: dict | None):
        """A connection with the statement's list parameters registered as Arrow tables, and the
        statement with ``$name`` placeholders and the scalar parameters it uses."""
        params = params or {}
        values = {k: v for k, v in params.items() if k in set(PARAM.findall(sql))}
        with self.get_connection() as con:
            lists = set(_LIST_RELATION.findall(sql))
            for name in lists:
                con.register(f"__list_{name}", pa.table({"v": arrow_list(params[name])}))
            try:
                yield con, PARAM.sub(r"$\1", sql), values
            finally:
                for name in lists:
                    con.unregister(f"__list_{name}")

    def _run(self, sql: str, params: dict | None, names: dict[str, str], fetch: bool):
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self._bound(self.render(sql, names), params) as (con, rendered, values):
            if fetch:  # a relation's Arrow result, without the extra copy a DB-API result makes
                return (
                    con.sql(rendered, params=values)
                    .to_arrow_table()
                    .to_pandas(self_destruct=True, split_blocks=True)
                )
            con.execute(rendered, values)
            return None

    def query(self, sql: str, params: dict | None = None, **names: str) -> pd.DataFrame:
        return self._run(sql, params, names, fetch=True)

    def batches(
        self, sql: str, params: dict | None = None, **names: str
    ) -> Iterator[pa.RecordBatch]:
        with self._bound(self.render(sql, names), params) as (con, rendered, values):
            yield from con.sql(rendered, params=values).fetch_record_batch(BATCH_ROWS)

    def execute(self, sql: str, params: dict | None = None, **names: str) -> None:
        self._run(sql, params, names, fetch=False)

    def ensure_schema(self, schema: str) -> None:
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")

    def exists(self, schema: str, name: str) -> bool:
        if not Path(self.database).exists():
            return False
        found = self.query(
            "SELECT count(*) AS n FROM information_schema.tables "
            "WHERE table_schema = @schema AND table_name = @table",
            {"schema": schema, "table": name},
        )
        return bool(found["n"].iloc[0])
