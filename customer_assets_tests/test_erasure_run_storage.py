"""Issue 22, item 3: no customer text in Dagster's own storage. After a week with a malformed event
that holds an email, and an erasure, the run storage (a persistent instance's SQLite files) holds
neither the erased id nor the email."""

from __future__ import annotations

import json
import shutil

import dagster as dg

from customer_assets_tests.support.pipeline import run_week
from customer_assets_tests.support.sources import EVENTS
from customer_assets_tests.test_erasure_key import busiest_customer

WEEK = "2026-11-16"
EMAIL = "jane.doe@example.com"


def test_run_storage_holds_no_erased_id_or_email(pipeline_env, small_source, monkeypatch, tmp_path):
    tmp = pipeline_env("small_source")
    zone = tmp_path / "events"
    shutil.copytree(EVENTS["small_source"], zone)
    folder = zone / "dt=2026-11-17"
    folder.mkdir(exist_ok=True)
    (folder / "hostile.jsonl").write_text(
        json.dumps(
            {
                "event_id": "e1",
                "event_type": "page_view",
                "customer_id": "C0000001",
                "timestamp": EMAIL,
            }
        )
        + "\n"
    )
    monkeypatch.setenv("EVENTS_PATH", str(zone))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        result = run_week(WEEK, instance=instance)
        scan = result.asset_materializations_for_node("etl__customer_event_aggregates")[0].metadata
        assert scan["malformed_lines"].value > 0
        customer = busiest_customer(tmp / "warehouse.duckdb")
        from customer_assets.definitions import build_definitions

        ids = tmp_path / "ids.txt"
        ids.write_text(customer + "\n")
        job = build_definitions("local").get_job_def("erase_customers")
        erasure = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "erase_customers_op": {
                        "config": {"ids_file": str(ids), "request": "DSR-STORAGE"}
                    }
                }
            },
        )
        assert erasure.success
    stored = {path: path.read_bytes() for path in home.rglob("*") if path.is_file()}
    assert any(p.suffix == ".db" for p in stored), sorted(stored)
    holders = {
        needle: [str(p.relative_to(home)) for p, data in stored.items() if needle.encode() in data]
        for needle in (customer, EMAIL)
    }
    assert holders == {customer: [], EMAIL: []}
