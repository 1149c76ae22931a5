"""The Dagster definitions of the weekly customer-data pipeline."""

from __future__ import annotations

import dagster as dg

from customer_assets import tables
from customer_assets.assets import (
    checks,
    extract,
    history,
    identity,
    kafka,
    marts,
    profile_inputs,
    profiles,
    rejects,
    star,
    summary,
    transform,
    validation,
    warehouse,
)
from customer_assets.cleanup.progress import IntermediateGraph
from customer_assets.cleanup.sweep import with_final_sweep
from customer_assets.deployments import WAREHOUSE_KINDS, deployment_name, resources_for
from customer_assets.erasure import erase_customers, rekey_suppression
from customer_assets.freshness import freshness_alerts, with_freshness
from customer_assets.hooks import cleanup_hooks
from customer_assets.late_changes import late_changes_default, source_changes_sensor
from customer_assets.schedules import weekly_pipeline_job, weekly_schedule
from customer_assets.sensors import (
    etl_failure_cleanup,
    events_landing_zone,
    orphaned_intermediates,
)
from customer_assets.settings import configure_runtime
from customer_assets.step_order import with_forked_steps, with_week_wide_limit
from customer_assets.step_threads import threaded_executor
from customer_assets.suppression_recheck import with_suppression_recheck

ASSET_MODULES = [
    extract,
    validation,
    rejects,
    history,
    transform,
    warehouse,
    kafka,
    profile_inputs,
    profiles,
    identity,
    star,
    marts,
    summary,
    checks,
]


def pipeline_assets() -> list:
    """Every asset of the pipeline, each step carrying the cleanup hooks (``cleanup/``), and each
    step that writes customer rows the suppression list's re-check after its write
    (``suppression.py``): an erasure that ran is never undone by a run that started before it."""
    assets = summary.with_summary_last(dg.load_assets_from_modules(ASSET_MODULES))
    hooks = cleanup_hooks(IntermediateGraph.of(assets))
    assets = [
        a.with_hooks(hooks) if isinstance(a, dg.AssetsDefinition) and a.is_executable else a
        for a in assets
    ]
    assets = with_suppression_recheck(assets)
    return with_freshness(assets) + list(dg.load_asset_checks_from_modules(ASSET_MODULES))


def with_warehouse_kind(assets: list, deployment: str) -> list:
    """The assets, each warehouse table showing where the deployment keeps it (a kind: the UI's
    icon)."""
    kind = WAREHOUSE_KINDS[deployment]

    def located(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.merge_attributes(kinds={kind}) if tables.is_table(spec.key) else spec

    return [
        dg.map_asset_specs(located, [asset])[0]
        if isinstance(asset, dg.AssetsDefinition)
        and not isinstance(asset, dg.AssetChecksDefinition)
        else asset
        for asset in assets
    ]


def build_definitions(deployment: str | None = None) -> dg.Definitions:
    """The definitions of ``deployment`` (by default ``DAGSTER_DEPLOYMENT``): what depends on the
    environment is decided here, not when a module is imported (but the partitions' first week)."""
    configure_runtime()
    deployment = deployment or deployment_name()
    resources = resources_for(deployment)
    assets = with_warehouse_kind(pipeline_assets(), deployment)
    # DuckDB takes one writer process per file, and a step's own process costs more than most steps
    # here: locally the steps run in the run's process, independent ones on threads at once. In
    # production each step has a process of its own, forked from one that imported the code once.
    executor = (
        threaded_executor
        if deployment == "local"
        else with_forked_steps(dg.multiprocess_executor, preload=__name__)
    )
    executor = with_week_wide_limit(executor, resources["settings"].week_wide_steps_at_once)
    return dg.Definitions(
        assets=assets,
        jobs=[weekly_pipeline_job, erase_customers, rekey_suppression],
        schedules=[weekly_schedule],
        sensors=[
            etl_failure_cleanup,
            events_landing_zone,
            source_changes_sensor(late_changes_default()),
            freshness_alerts,
            orphaned_intermediates,
            kafka.kafka_arrivals,
        ],
        resources=resources,
        executor=with_final_sweep(executor, resources["settings"], IntermediateGraph.of(assets)),
    )


defs = build_definitions()
