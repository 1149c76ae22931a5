"""The definitions each deployment builds, decided by ``build_definitions``, not by the import.

The asset specs of every deployment are kept in ``asset_specs.json`` beside this file (as
dagster-open-platform's ``test_defs.py`` does), so a change to a key, a kind, a group, an owner, a
tag, the partitions or a check shows in review. After an intended change, regenerate it and review
the diff:

    .venv/bin/python -m customer_assets_tests.test_definitions
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from customer_assets import tables
from customer_assets.assets.common import (
    ETL,
    PARTITIONS,
    WORKING_FILES_TAG,
    keeps_working_files,
    working_files,
)
from customer_assets.cleanup.progress import IntermediateGraph
from customer_assets.deployments import DEPLOYMENTS
from customer_assets.partitions import FIRST_WEEK
from customer_assets.schedules import weekly_pipeline_job
from customer_assets.settings import PipelineSettings
from customer_assets_tests.support.definitions import offline_definitions

SUMMARY = dg.AssetKey([ETL, "pipeline_summary"])
SNAPSHOT = Path(__file__).with_name("asset_specs.json")
REGENERATE = (
    "regenerate with `.venv/bin/python -m customer_assets_tests.test_definitions` and "
    "review the diff"
)


def _partitions(partitions_def) -> dict | None:
    """The partitions as the snapshot keeps them; the first week by name (decided at import)."""
    if partitions_def is None:
        return None
    start = partitions_def.start.date().isoformat()
    return {
        "type": type(partitions_def).__name__,
        "start": "FIRST_WEEK" if start == FIRST_WEEK else start,
        "day_offset": partitions_def.day_offset,
        "timezone": partitions_def.timezone,
    }


def asset_specs(defs: dg.Definitions) -> dict[str, dict]:
    """Each asset's key, kinds, group, owners, tags, partitions, freshness and check names."""
    checks: dict[dg.AssetKey, list[str]] = {}
    for check in defs.resolve_asset_graph().asset_check_keys:
        checks.setdefault(check.asset_key, []).append(check.name)
    return {
        spec.key.to_user_string(): {
            "kinds": sorted(spec.kinds),
            "group": spec.group_name,
            "owners": list(spec.owners),
            "tags": {
                k: v for k, v in sorted(spec.tags.items()) if not k.startswith("dagster/kind/")
            },
            "partitions": _partitions(spec.partitions_def),
            "freshness": type(spec.freshness_policy).__name__ if spec.freshness_policy else None,
            "checks": sorted(checks.get(spec.key, [])),
        }
        for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    }


def snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, dict]:
    return {
        deployment: asset_specs(offline_definitions(monkeypatch, tmp_path, deployment))
        for deployment in DEPLOYMENTS
    }


def test_the_asset_specs_of_each_deployment_match_the_snapshot(monkeypatch, tmp_path):
    assert snapshot(monkeypatch, tmp_path) == json.loads(SNAPSHOT.read_text()), REGENERATE


def test_prod_built_after_a_local_import_shows_bigquery_tables(monkeypatch, tmp_path):
    """The package is imported under local settings here; prod's definitions still say BigQuery."""

    def table_kinds(deployment: str) -> list[set[str]]:
        defs = offline_definitions(monkeypatch, tmp_path, deployment)
        return [spec.kinds for spec in defs.resolve_all_asset_specs() if tables.is_table(spec.key)]

    local, prod = table_kinds("local"), table_kinds("prod")
    assert local and all("duckdb" in kinds and "bigquery" not in kinds for kinds in local)
    assert prod and all("bigquery" in kinds and "duckdb" not in kinds for kinds in prod)


def test_the_late_changes_sensor_is_on_by_default_only_against_a_source(monkeypatch, tmp_path):
    """Decided when the definitions are built: the same process builds both."""

    def default(source: bool) -> dg.DefaultSensorStatus:
        defs = offline_definitions(monkeypatch, tmp_path, "local", source=source)
        return defs.resolve_sensor_def("source_changes").default_status

    assert default(source=True) == dg.DefaultSensorStatus.RUNNING
    assert default(source=False) == dg.DefaultSensorStatus.STOPPED
    assert default(source=True) == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_run_summary_waits_for_every_other_asset_of_the_week(monkeypatch, tmp_path, deployment):
    """The summary removes every file of the week under etl/ and publishes the analysts' copy of the
    warehouse: each step that writes or reads an intermediate there (``IntermediateGraph``), keeps
    working files there (tagged ``keeps_working_files``, which ``working_files`` demands) or writes
    a table of the week must be upstream of it, or steps run at once (the multiprocess executor,
    the local one's threads) may have a file removed under them, and the analysts' copy may miss
    the week's marts."""
    defs = offline_definitions(monkeypatch, tmp_path, deployment)
    graph = defs.resolve_asset_graph()
    with_files = IntermediateGraph.of(defs.assets).steps()
    keeping = [
        key for key in graph.get_all_asset_keys() if WORKING_FILES_TAG in graph.get(key).tags
    ]
    assert keeping, "no asset keeps working files: the tag or this test is out of date"
    steps = {
        key: assets_def.op.name
        for assets_def in defs.assets
        if isinstance(assets_def, dg.AssetsDefinition) and assets_def.is_executable
        for key in assets_def.keys
    }
    upstream = graph.get_ancestor_asset_keys(SUMMARY) | {SUMMARY}
    ops_upstream = {steps[key] for key in upstream if key in steps}
    assert sorted(with_files - ops_upstream) == []
    assert [key.to_user_string() for key in keeping if key not in upstream] == []
    weekly_tables = [
        key.to_user_string()
        for key in graph.materializable_asset_keys
        if tables.is_table(key) and graph.get(key).partitions_def is not None
    ]
    assert weekly_tables
    # each a direct dep: a run of a selection still waits for every one it holds
    parents = graph.get(SUMMARY).parent_keys
    assert [k for k in weekly_tables if dg.AssetKey.from_user_string(k) not in parents] == []


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_check_of_the_week_runs_before_the_summary(monkeypatch, tmp_path, deployment):
    """The week's report counts the run's failed checks (its warnings among them): a check step the
    summary does not wait for may run after the report, its warning missing from it and its alert
    arriving after "week succeeded". Derived from the weekly job's plan, so a check added later is
    covered."""
    from dagster._core.execution.api import create_execution_plan

    defs = offline_definitions(monkeypatch, tmp_path, deployment)
    plan = create_execution_plan(defs.resolve_job_def(weekly_pipeline_job.name))
    (summary,) = [s.key for s in plan.steps if s.key == SUMMARY.to_python_identifier()]
    upstream, frontier = set(), [summary]
    while frontier:
        for key in plan.get_step_by_key(frontier.pop()).get_execution_dependency_keys():
            if key not in upstream:
                upstream.add(key)
                frontier.append(key)
    checks = [s.key for s in plan.steps if s.key != summary and not _writes_an_asset(s)]
    assert checks, "the plan has no check step: this test is out of date"
    assert sorted(set(checks) - upstream) == []
    assert sorted(s.key for s in plan.steps if s.key not in upstream | {summary}) == []


def _writes_an_asset(step) -> bool:
    """Whether an execution step materializes an asset (else it only evaluates checks)."""
    return any(
        output.properties is not None and output.properties.asset_key is not None
        for output in step.step_outputs
    )


def test_an_asset_added_later_is_waited_for_by_the_summary():
    """Derived, not listed: a weekly asset added to the pipeline becomes a dep of the summary."""
    from customer_assets.assets.summary import with_summary_last
    from customer_assets.definitions import ASSET_MODULES

    @dg.asset(
        partitions_def=PARTITIONS,
        key_prefix=["customer_analytics"],
        deps=[tables.key(tables.FACT_TRANSACTIONS)],
    )
    def added_next_month() -> None:
        """A new mart."""

    assets = with_summary_last([*dg.load_assets_from_modules(ASSET_MODULES), added_next_month])
    (summary,) = [a for a in assets if isinstance(a, dg.AssetsDefinition) and SUMMARY in a.keys]
    deps = summary.asset_deps[SUMMARY]
    assert added_next_month.key in deps
    # a direct dep too, though upstream of another: a run of a selection without the new mart
    # still waits for the facts
    assert tables.key(tables.FACT_TRANSACTIONS) in deps


def test_a_step_keeping_working_files_without_the_tag_is_refused(tmp_path):
    """The tag the test above relies on cannot be forgotten: ``working_files`` refuses an untagged
    asset's step before it writes anything."""
    settings = PipelineSettings(
        data_dir=str(tmp_path), reports_dir=str(tmp_path), etl_log_dir=str(tmp_path)
    )

    @dg.asset(partitions_def=PARTITIONS, key_prefix=[ETL])
    def untagged(context) -> None:
        working_files(context, settings, context.assets_def.key, "rows")

    @dg.asset(partitions_def=PARTITIONS, key_prefix=[ETL], tags=keeps_working_files())
    def tagged(context) -> None:
        (path,) = working_files(context, settings, context.assets_def.key, "rows")
        assert path == tmp_path / ETL / "tagged" / "2026-11-16.rows.parquet"

    with pytest.raises(dg.DagsterInvariantViolationError, match="tag it keeps_working_files"):
        dg.materialize([untagged], partition_key="2026-11-16")
    assert dg.materialize([tagged], partition_key="2026-11-16").success


def dumped(specs_by_deployment: dict[str, dict]) -> str:
    """The snapshot as JSON with one line per asset, so a diff names the asset that changed."""

    def lines(specs: dict[str, dict]) -> str:
        return ",\n".join(
            f"    {json.dumps(key)}: {json.dumps(spec, sort_keys=True)}"
            for key, spec in specs.items()
        )

    deployments = [
        f'  "{deployment}": {{\n{lines(specs)}\n  }}'
        for deployment, specs in specs_by_deployment.items()
    ]
    return "{\n" + ",\n".join(deployments) + "\n}\n"


if __name__ == "__main__":
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as directory:
        SNAPSHOT.write_text(dumped(snapshot(patch, Path(directory))))
    print(f"wrote {SNAPSHOT}")


def test_the_source_read_starts_first_and_runs_alone_in_the_local_job(monkeypatch, tmp_path):
    """The week's read of the production database (``etl/raw_transactions``) is the one step of the
    local job that runs alone (``step_threads.RUNS_ALONE_TAG``), and it starts before every other
    root of the job: its snapshot is held for as short a time as the read takes."""
    from customer_assets.step_threads import RUNS_ALONE_TAG

    defs = offline_definitions(monkeypatch, tmp_path, "local")
    steps = [
        assets_def.op
        for assets_def in defs.assets
        if isinstance(assets_def, dg.AssetsDefinition) and assets_def.is_executable
    ]
    alone = [op.name for op in steps if op.tags.get(RUNS_ALONE_TAG) == "true"]
    assert alone == ["etl__raw_transactions"]
    priority = {op.name: int(op.tags.get("dagster/priority", 0)) for op in steps}
    assert priority["etl__raw_transactions"] == max(priority.values())
    assert sorted(priority.values())[-2] < priority["etl__raw_transactions"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_readmes_one_week_wide_step_at_a_time_is_a_valid_run_config(
    monkeypatch, tmp_path, deployment
):
    """README "Scaling" bounds a week's peak by running its week-wide steps one at a time: that run
    configuration is valid for the weekly job, and the steps that set the peak at 10M rows a week
    (the identity beside the transform) carry the tag it limits."""
    import re

    import yaml

    from customer_assets.assets.common import WEEK_WIDE_TAG

    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if WEEK_WIDE_TAG in b]
    config = yaml.safe_load(block)
    defs = offline_definitions(monkeypatch, tmp_path, deployment)
    job = defs.resolve_job_def(weekly_pipeline_job.name)
    (executor,) = dg.validate_run_config(job, config)["execution"].values()  # by executor name
    assert executor["tag_concurrency_limits"] == [{"key": WEEK_WIDE_TAG, "limit": 1}]
    tagged = {node.name for node in job.graph.nodes if node.tags.get(WEEK_WIDE_TAG) == "true"}
    identity = dg.AssetKey(["customer_analytics", "customer_identity_map"]).to_python_identifier()
    assert {"etl__transformed_transactions", identity} <= tagged
    # the source's read stays alone, not among them
    assert "etl__raw_transactions" not in tagged


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
@pytest.mark.parametrize(
    ("at_once", "run_config", "expected"),
    [
        ("1", {}, [{"key": "customer_assets/week_wide", "limit": 1}]),
        ("", {}, None),
        # a run's own limit on the tag wins
        (
            "1",
            {"tag_concurrency_limits": [{"key": "customer_assets/week_wide", "limit": 2}]},
            [{"key": "customer_assets/week_wide", "limit": 2}],
        ),
    ],
)
def test_week_wide_steps_at_once_limits_every_run_of_the_deployment(
    monkeypatch, tmp_path, deployment, at_once, run_config, expected
):
    """WEEK_WIDE_STEPS_AT_ONCE reaches the executor of every run, with no run configuration (the
    schedule's, a backfill's, the CLI's runs have none): the executor the run creates carries the
    limit."""
    from dagster._core.definitions.job_base import InMemoryJob

    monkeypatch.setenv("WEEK_WIDE_STEPS_AT_ONCE", at_once)
    defs = offline_definitions(monkeypatch, tmp_path, deployment)
    job = defs.resolve_job_def(weekly_pipeline_job.name)
    (config,) = dg.validate_run_config(
        job, {"execution": {"config": run_config}} if run_config else {}
    )["execution"].values()
    with dg.instance_for_test() as instance:
        executor = job.executor_def.executor_creation_fn(
            dg.InitExecutorContext(InMemoryJob(job), job.executor_def, config, instance)
        )
    inner = executor.inner  # the final sweep's executor wraps the deployment's
    limits = getattr(inner, "tag_concurrency_limits", None) or getattr(
        inner, "_tag_concurrency_limits", None
    )
    assert (limits or None) == expected
