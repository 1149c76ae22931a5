"""The warehouse is configured once: each deployment's ``warehouse_io_manager`` loads into the very
warehouse its ``warehouse`` resource runs SQL in, so the two cannot name different files, projects or
datasets."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from customer_assets.definitions import build_definitions
from customer_assets.deployments import DEPLOYMENTS
from customer_assets.partitions import weekly_partitions
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets_tests.support.definitions import offline_definitions

WEEK = "2026-11-16"


def deployment_resources(monkeypatch, tmp_path, deployment: str) -> dict:
    defs = offline_definitions(monkeypatch, tmp_path, deployment)
    if deployment == "prod":  # every setting of the warehouse named, so each is seen to reach both
        monkeypatch.setenv("BIGQUERY_DATASET", "one_dataset")
        monkeypatch.setenv("BIGQUERY_LOCATION", "EU")
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://emulator.invalid:9050")
        defs = build_definitions("prod")
    return dict(defs.resources)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_io_manager_is_given_the_warehouse_resource_itself(monkeypatch, tmp_path, deployment):
    resources = deployment_resources(monkeypatch, tmp_path, deployment)
    warehouse, io_manager = resources["warehouse"], resources["warehouse_io_manager"]
    assert io_manager.warehouse is warehouse
    assert io_manager.nested_resources == {"warehouse": warehouse}
    # no setting of the warehouse's own left on the IO manager to disagree with it
    fields = set(type(io_manager).model_fields)
    assert not fields & {"database", "lock_timeout_seconds", "project", "location", "emulator_host"}


def test_prod_resolves_one_project_dataset_and_emulator_for_both(monkeypatch, tmp_path):
    resources = deployment_resources(monkeypatch, tmp_path, "prod")
    io_manager = resources["warehouse_io_manager"]
    with dg.build_resources({"warehouse_io_manager": io_manager}) as built:  # as a run resolves it
        loads_into = built.warehouse_io_manager.warehouse
    runs_sql_in = resources["warehouse"].process_config_and_initialize()
    seen = [
        (w.project, w.location, w.dataset_override, w.emulator_host)
        for w in (runs_sql_in, loads_into)
    ]
    assert seen == [("offline-project", "EU", "one_dataset", "http://emulator.invalid:9050")] * 2


def test_local_loads_a_week_where_the_warehouse_resource_finds_it(monkeypatch, tmp_path):
    resources = deployment_resources(monkeypatch, tmp_path, "local")
    assert resources["warehouse"].database == str(tmp_path / "warehouse.duckdb")

    @dg.asset(
        key_prefix=["configured_once"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": "timestamp"},
    )
    def loaded() -> pd.DataFrame:
        return pd.DataFrame({"n": [1, 2], "timestamp": [pd.Timestamp(WEEK, tz="UTC")] * 2})

    @dg.asset(deps=[loaded], partitions_def=weekly_partitions)
    def found(warehouse: WarehouseSQL) -> None:
        assert warehouse.exists("configured_once", "loaded")
        rows = warehouse.query(
            "SELECT count(*) AS n FROM {t}", t=warehouse.table("configured_once", "loaded")
        )
        assert rows["n"].iloc[0] == 2

    picked = {key: resources[key] for key in ("warehouse", "warehouse_io_manager")}
    assert dg.materialize([loaded, found], partition_key=WEEK, resources=picked).success
