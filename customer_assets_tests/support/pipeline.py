"""Run weeks of the real asset graph in process, with the deployment's own resources."""

from __future__ import annotations

import duckdb
import dagster as dg
import pandas as pd

from customer_assets.definitions import pipeline_assets
from customer_assets.deployments import resources_for

ASSETS = pipeline_assets()


def run_week(partition: str, selection=None, instance: dg.DagsterInstance | None = None,
             raise_on_error: bool = True, assets: list | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets or ASSETS, partition_key=partition, resources=resources_for("local"),
                          selection=selection, instance=instance or dg.DagsterInstance.ephemeral(),
                          raise_on_error=raise_on_error)


def warehouse(path, statement: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(statement).df()
