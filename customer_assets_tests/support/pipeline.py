"""Run weeks of the real asset graph in process, with the deployment's own resources."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from customer_assets.definitions import pipeline_assets
from customer_assets.deployments import resources_for
from customer_assets.io_managers.parquet import ParquetIOManager

ASSETS = pipeline_assets()


class KeepingParquetIOManager(ParquetIOManager):
    """The Parquet intermediates, each also copied under ``keep_dir`` as written: an intermediate
    lives no longer than its run, and some tests look at what a step wrote after the run."""

    keep_dir: str = Field(description="Where the copies go (same layout as DATA_DIR).")

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        super().handle_output(context, obj)
        for suffix in (".parquet", ".json"):
            written = self._path(context, suffix)
            if written.exists():
                copy = Path(self.keep_dir, written.relative_to(self.base_dir))
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(written, copy)


def run_week(
    partition: str,
    selection=None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    assets: list | None = None,
    keep_intermediates_in: Path | None = None,
) -> dg.ExecuteInProcessResult:
    """One week of the graph; ``keep_intermediates_in`` keeps a copy of every intermediate
    written."""
    resources = resources_for("local")
    if keep_intermediates_in is not None:
        resources["io_manager"] = KeepingParquetIOManager(
            settings=resources["settings"], keep_dir=str(keep_intermediates_in)
        )
    return dg.materialize(
        assets or ASSETS,
        partition_key=partition,
        resources=resources,
        selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def warehouse(path, statement: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(statement).df()


def table_rows(path) -> dict[str, int]:
    """Each table of a DuckDB file with its row count."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1"
        ).fetchall()
        return {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for (n,) in names}
