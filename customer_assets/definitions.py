"""The Dagster definitions of the weekly customer-data pipeline."""

from __future__ import annotations

import dagster as dg

from customer_assets.assets import extract, profiles, summary, transform, validation, warehouse
from customer_assets.deployments import deployment_name, resources_for
from customer_assets.schedules import weekly_pipeline_job, weekly_schedule
from customer_assets.sensors import etl_failure_cleanup, events_landing_zone

ASSET_MODULES = [extract, validation, transform, warehouse, profiles, summary]


def build_definitions(deployment: str | None = None) -> dg.Definitions:
    deployment = deployment or deployment_name()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        jobs=[weekly_pipeline_job],
        schedules=[weekly_schedule],
        sensors=[etl_failure_cleanup, events_landing_zone],
        resources=resources_for(deployment),
        # DuckDB takes one writer process per file, and in-process runs start in a third of the time.
        executor=dg.in_process_executor if deployment == "local" else dg.multiprocess_executor,
    )


defs = build_definitions()
