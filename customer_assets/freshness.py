"""Freshness: the warehouse tables are fresh when last week was loaded by Monday 06:00 UTC.

Every warehouse table declares a cron ``FreshnessPolicy`` (shown in the UI: materialized in the week
before Monday 06:00 UTC); the sensor ``freshness_alerts`` posts one alert per missed week to the
webhook.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from customer_assets import tables
from customer_assets.alerts import Alerts
from customer_assets.partitions import week_bounds, weekly_partitions

DEADLINE_CRON = "0 6 * * 1"  # Monday 06:00 UTC: the schedule runs at 02:00
DEADLINE_AFTER_WEEK = timedelta(hours=6)
WATCHED = tables.key(tables.WEEKLY_TRANSACTIONS)

WEEKLY_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=DEADLINE_CRON, lower_bound_delta=timedelta(days=7), timezone="UTC"
)


def with_freshness(assets: list) -> list:
    """The assets, every warehouse table among them (``tables.is_table``) declaring
    ``WEEKLY_FRESHNESS``: a new table is covered without being listed."""
    out = []
    for asset in assets:
        if (
            isinstance(asset, dg.AssetsDefinition)
            and not isinstance(asset, dg.AssetChecksDefinition)
            and any(tables.is_table(key) for key in asset.keys)
        ):
            asset = asset.map_asset_specs(
                lambda spec: (
                    dg.apply_freshness_policy(spec, WEEKLY_FRESHNESS)
                    if tables.is_table(spec.key)
                    else spec
                )
            )
        out.append(asset)
    return out


def utc_now() -> datetime:
    """The sensor's clock, in one place (a test sets it: the answer depends on the hour of the
    week)."""
    return datetime.now(timezone.utc)


def missed_week(instance: dg.DagsterInstance, now: datetime) -> str | None:
    """The last complete week, if its deadline (the next Monday 06:00 UTC) has passed and the
    warehouse's weekly_transactions has no materialization of it; else None."""
    keys = weekly_partitions.get_partition_keys(current_time=now)
    if not keys:
        return None
    week = keys[-1]
    if now < week_bounds(week)[1] + DEADLINE_AFTER_WEEK:
        return None
    return None if week in instance.get_materialized_partitions(WATCHED) else week


@dg.sensor(
    name="freshness_alerts",
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one alert (ALERT_WEBHOOK_URL) when last week is not in the warehouse by Monday "
    "06:00 UTC; remembers the weeks it alerted for.",
)
def freshness_alerts(context: dg.SensorEvaluationContext, alerts: Alerts):
    week = missed_week(context.instance, utc_now())
    alerted = set(json.loads(context.cursor or "[]"))
    if week is None or week in alerted:
        return dg.SkipReason(
            "the warehouse is fresh" if week is None else f"already alerted for week {week}"
        )
    alerts.send(
        "freshness_missed",
        f"week {week} is not in the warehouse by Monday 06:00 UTC",
        week,
        {"table": WATCHED.to_user_string()},
        context.log,
    )
    context.update_cursor(json.dumps(sorted(alerted | {week})[-20:]))
    return dg.SkipReason(f"alerted: week {week} missed its deadline")
