"""The local warehouse: DuckDB tables under a schema named by the asset key prefix.

Built on dagster-duckdb's extension points: ``DuckDBWarehouseIOManager`` builds its ``DbIOManager``
over a ``DuckDbClient`` (the table, schema, partition window and input columns come from its
``TableSlice``; connections, the ``warehouse`` resource's, wait while another process holds the
file) with a type handler of its own, ``WeekLoad``. The library's pandas handler is not used: its
``DbIOManager`` deletes the week in one statement and the handler inserts in another, so a failure
in between would leave the week empty; here the client deletes nothing and the handler replaces the
week in one transaction, adds new columns (never drops one), moves a transaction that changed weeks,
loads a ``StoredFrame`` straight from its Parquet file, and checks the week's row count before
committing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from pydantic import Field

from customer_assets.errors import first_line
from customer_assets.frames import CarriedWeek, StoredFrame
from customer_assets.io_managers.declared import (
    DUCKDB_NULL,
    declared_types,
    holds_values,
    table_types,
)
from customer_assets.io_managers.duckdb_incoming import carry_rows, incoming_parts
from customer_assets.io_managers.memory import release_freed_memory
from customer_assets.io_managers.warehouse import (
    SchemaMismatchError,
    column_descriptions,
    load_report,
    report_metadata,
    type_diff,
    unique_key,
    unique_window,
    write_load_report,
)
from customer_assets.logic.duckdb_memory import quoted
from customer_assets.resources.warehouse_sql import DuckDBWarehouse


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what the failed load did. A fault such as a full disk can end (or invalidate) the
    transaction itself, and the error of this ROLLBACK must not replace the one that says why the
    load failed."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


class WarehouseDiskFull(dg.Failure):
    """The disk of the DuckDB file is full; not retried (see ``disk_full_named``)."""

    def __init__(self, database: str, exc: Exception):
        super().__init__(
            description=f"The warehouse disk is full: no space left on device writing {database}. The week's load "
            "is all or nothing: the table holds the week as before, or (when only the checkpoint after the commit "
            "failed) the new week, kept in DuckDB's write-ahead log. Free space on that disk, or point "
            "WAREHOUSE_DUCKDB_PATH at a larger one, then re-run the week. Not retried. "
            f"[{first_line(exc)}]",
            allow_retries=False,
        )


@contextmanager
def disk_full_named(database: str):
    """A full disk as the headline: DuckDB reports it from the insert, the COMMIT, or the checkpoint
    made when the connection closes, and a later statement's error (a ROLLBACK of an ended
    transaction) can hide it."""
    try:
        yield
    except duckdb.Error as exc:
        if "No space left on device" in str(exc):
            raise WarehouseDiskFull(database, exc) from exc
        raise


def _replace_week(
    con: duckdb.DuckDBPyConnection,
    label: str,
    qualified: str,
    column: str,
    window: tuple,
    select: str,
    parts: Iterator[None],
    unique: tuple[str | None, int],
    expected: int,
    carry: CarriedWeek | None = None,
) -> tuple[int | None, int]:
    """One transaction: deletes the week, inserts every part of ``incoming`` (the first one already
    registered, then the rest of ``parts``), copies the carried rows of a ``CarriedWeek``, checks
    the week's row count and commits; rolls back on any failure. Returns the rows moved from other
    weeks (a table with a unique key) and the rows carried."""
    start, end = window
    where = f'"{column}" >= ? AND "{column}" < ?'
    params = [start, end]
    key, key_weeks = unique
    moved = 0

    def insert_part() -> None:
        nonlocal moved
        if key:  # a row of a nearby week moved into this one: it leaves that week
            moved += con.execute(
                f"DELETE FROM {qualified} WHERE {quoted(key)} IN (SELECT {quoted(key)} FROM incoming) "
                f"AND NOT ({where}) AND {quoted(column)} >= ? AND {quoted(column)} < ?",
                params + list(unique_window(start, end, key_weeks)),
            ).fetchone()[0]
        con.execute(f"INSERT INTO {qualified} BY NAME SELECT {select} FROM incoming")

    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {qualified} WHERE {where}", params)
        insert_part()
        for _ in parts:
            insert_part()
        carried = carry_rows(con, qualified, column, window, carry) if carry else 0
        count = con.execute(f"SELECT count(*) FROM {qualified} WHERE {where}", params).fetchone()[0]
        if count != expected + carried:
            raise RuntimeError(
                f"{label}: {count} rows in the week after the load, expected {expected + carried}"
                + (f" ({expected} given, {carried} carried)" if carry else "")
            )
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return (moved if key else None), carried


def _repair_null_columns(
    context: OutputContext,
    con: duckdb.DuckDBPyConnection,
    qualified: str,
    where: str,
    existing: dict[str, str],
    declared: dict,
    wanted: dict[str, str],
) -> list[str]:
    """Gives each NULL column of the table its declared (or wanted) type, updating ``existing``;
    returns the repaired columns.

    A NULL column (an empty first week before tables were declared) holds only nulls: changing its
    type loses nothing, and is the only way the table can ever take a week with values again."""
    targets = {
        **{n: c.duckdb for n, c in declared.items() if c.from_model and c.duckdb},
        **wanted,
    }
    repaired = [
        n
        for n, kind in existing.items()
        if kind == DUCKDB_NULL and targets.get(n, DUCKDB_NULL) != DUCKDB_NULL
    ]
    for name in repaired:
        con.execute(
            f"ALTER TABLE {qualified} ALTER COLUMN {quoted(name)} SET DATA TYPE {targets[name]}"
        )
        existing[name] = targets[name]
        context.log.warning(
            f"{where}: column {name} had type NULL (created by an empty week), now {targets[name]}"
        )
    return repaired


class WeekLoad(DbTypeHandler):
    """Replaces one week of a table in a single transaction, then checks the week's row count.

    Columns are matched by name; a new column is added, a column never dropped, and a changed type
    stops the load with the difference spelled out. A ``StoredFrame`` (a Parquet file) is loaded by
    DuckDB straight from the file, so a week's load does not hold the week in memory.
    """

    def __init__(self, database: str, reports_dir: str):
        self.database, self.reports_dir = database, reports_dir

    @property
    def supported_types(self) -> Sequence[type]:
        return [pd.DataFrame, StoredFrame, CarriedWeek]

    @staticmethod
    def _bounds(table_slice: TableSlice, con, qualified: str, column: str):
        window = table_slice.partition_dimensions[0].partitions
        kind = con.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema || '.' || table_name = ? AND column_name = ?",
            [qualified, column],
        ).fetchall()
        if kind and "TIME ZONE" not in kind[0][0]:
            # Naive columns hold UTC wall time; the partition windows are in UTC.
            return window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)
        return window.start, window.end

    @staticmethod
    def _prepare_table(
        context: OutputContext,
        con: duckdb.DuckDBPyConnection,
        qualified: str,
        where: str,
        obj: pd.DataFrame | StoredFrame,
    ) -> tuple[list[str], list[str], str]:
        """Creates the table if missing with the declared types (``declared``), repairs a NULL
        column, adds new columns, and stops on a changed type. Returns the added and repaired
        columns, and the select list that loads ``incoming`` (a column holding no value cast to its
        declared type)."""
        incoming = {r[0]: r[1] for r in con.execute("DESCRIBE incoming").fetchall()}
        declared = declared_types(context, obj.empty() if isinstance(obj, StoredFrame) else obj)
        wanted, casts = table_types(
            declared, incoming, "duckdb", lambda name: holds_values(obj, name), DUCKDB_NULL
        )
        select = ", ".join(
            f"CAST({quoted(n)} AS {casts[n]}) AS {quoted(n)}" if n in casts else quoted(n)
            for n in incoming
        )
        # Cast to the wanted types, not just the holding-no-value ones: a table is created with the
        # declared types even when the first frame's are another (a mismatch then stops the load
        # below).
        create = ", ".join(
            f"CAST({quoted(n)} AS {t}) AS {quoted(n)}" if t != incoming[n] else quoted(n)
            for n, t in wanted.items()
        )
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified} AS SELECT {create} FROM incoming LIMIT 0"
        )
        existing = {r[0]: r[1] for r in con.execute(f"DESCRIBE {qualified}").fetchall()}
        repaired = _repair_null_columns(context, con, qualified, where, existing, declared, wanted)
        added, changed = type_diff(existing, {**incoming, **casts})
        if changed:
            raise SchemaMismatchError(
                f"{where}: column types differ, load stopped:\n" + "\n".join(changed)
            )
        for name in added:
            con.execute(
                f"ALTER TABLE {qualified} ADD COLUMN {quoted(name)} {casts.get(name, incoming[name])}"
            )
        return added, repaired, select

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame | StoredFrame | CarriedWeek,
        connection: duckdb.DuckDBPyConnection,
    ) -> dict:
        with disk_full_named(self.database):
            return self._load_week(context, table_slice, obj, connection)

    def _load_week(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame | StoredFrame | CarriedWeek,
        connection: duckdb.DuckDBPyConnection,
    ) -> dict:
        carry, obj = (obj, obj.frame) if isinstance(obj, CarriedWeek) else (None, obj)
        con, schema, table = connection, table_slice.schema, table_slice.table
        column = table_slice.partition_dimensions[0].partition_expr
        qualified = f"{quoted(schema)}.{quoted(table)}"
        release_freed_memory(full=False)
        started = time.monotonic()
        parts = incoming_parts(con, obj)
        next(parts)  # the first part: its columns (every part has the same types)
        added, repaired, select = self._prepare_table(
            context, con, qualified, f"{schema}.{table}", obj
        )
        window = self._bounds(table_slice, con, f"{schema}.{table}", column)
        moved, carried = _replace_week(
            con,
            f"{schema}.{table}",
            qualified,
            column,
            window,
            select,
            parts,
            unique_key(context),
            len(obj),
            carry,
        )
        report = load_report(
            len(obj) + carried,
            f"{self.database}:{schema}.{table}",
            started,
            time.monotonic(),
            added_columns=added,
            repaired_columns=repaired,
            **({"moved_from_other_weeks": moved} if moved is not None else {}),
            **({"carried_rows": carried, "given_rows": len(obj)} if carry else {}),
        )
        path = write_load_report(self.reports_dir, context.asset_partition_key, table, report)
        return report_metadata(
            report,
            path,
            obj.empty() if isinstance(obj, StoredFrame) else obj,
            column_descriptions(context),
            table_name=f"{schema}.{table}",
            uri=f"duckdb://{Path(self.database).resolve()}",
        )

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: duckdb.DuckDBPyConnection
    ) -> pd.DataFrame:
        release_freed_memory()
        schema, table = table_slice.schema, table_slice.table
        column = table_slice.partition_dimensions[0].partition_expr
        start, end = self._bounds(table_slice, connection, f"{schema}.{table}", column)
        select = ", ".join(quoted(c) for c in table_slice.columns) if table_slice.columns else "*"
        # Through Arrow: DuckDB's own DataFrame conversion is several times slower and larger for a
        # week of snapshots, with the same dtypes and values.
        sql = (
            f"SELECT {select} FROM {quoted(schema)}.{quoted(table)} "
            f"WHERE {quoted(column)} >= ? AND {quoted(column)} < ?"
        )
        rows = connection.sql(sql, params=[start, end]).to_arrow_table()
        return rows.to_pandas(self_destruct=True, split_blocks=True)


class _WeekSwapClient(DuckDbClient):
    """dagster-duckdb's client, connecting through the ``warehouse`` resource (UTC, waiting while
    another process holds the file), deleting nothing itself: ``WeekLoad`` deletes and inserts the
    week in one transaction."""

    def __init__(self, warehouse: DuckDBWarehouse):
        self.warehouse = warehouse

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(table_slice.schema)}")

    @contextmanager
    def connect(self, context, table_slice):
        database = self.warehouse.database
        if isinstance(context, InputContext) and not Path(database).exists():
            raise FileNotFoundError(
                f"no warehouse at {database}: materialize "
                f"{table_slice.schema}.{table_slice.table} first"
            )
        with disk_full_named(database), self.warehouse.get_connection() as con:
            yield con


class DuckDBWarehouseIOManager(dg.ConfigurableIOManagerFactory):
    """The week's rows of a table replaced in one transaction and row-count verified (``WeekLoad``);
    DuckDB allows one writing process per file, so the local deployment runs steps in process.

    Which file, and how long to wait for its lock, is the nested ``warehouse`` resource's, so the
    loads and the SQL run in the warehouse never name two files. dagster-duckdb's
    ``DuckDBIOManager`` is not subclassed: it would repeat the file as a ``database`` of its own;
    what it builds (a ``DbIOManager`` over a ``DuckDbClient``) is built here the same way."""

    warehouse: DuckDBWarehouse = Field(
        description="The ``warehouse`` resource: the DuckDB file (WAREHOUSE_DUCKDB_PATH) and how "
        "long a load waits for another process's lock on it (WAREHOUSE_LOCK_TIMEOUT)."
    )
    reports_dir: str = Field(description="Where each week's load report JSON is written.")

    def create_io_manager(self, context) -> DbIOManager:
        database = self.warehouse.database
        return DbIOManager(
            db_client=_WeekSwapClient(self.warehouse),
            database=database,
            schema=None,
            type_handlers=[WeekLoad(database, self.reports_dir)],
            default_load_type=pd.DataFrame,
            io_manager_name="DuckDBWarehouseIOManager",
        )
