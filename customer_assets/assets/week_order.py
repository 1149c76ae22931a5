"""Weeks run at once keep their order: a week's carried steps wait for the week before.

A backfill runs several weeks at once (the queued run coordinator's limits, one run per week). What
a week reads only of itself (its extract, validation, quarantine, the CRM's, the ERP's and the
events' records of the week, the product catalogue as extracted, its days) runs in parallel. What
carries the weeks before (the customer history, and everything after it: the transform's lifetime
metrics, the profiles, dim_customers, the facts, the marts; the carried identity; and dim_products'
type 2 versions) must see the week before complete, or the result differs from running the weeks
one by one. So the three steps that open those branches, ``customer_history``,
``customer_identity_map`` (which runs beside the history, not after it) and ``dim_products``
(``ORDER_GATES``), first wait for a started run of the week before to end
(``after_previous_week``).

Only a started run is waited for: a queued one may sit behind this very run (a full queue of later
weeks would deadlock), and the wait is bounded (``PREVIOUS_WEEK_WAIT_SECONDS``). A week carried
without its previous week (out of order, or after the wait) is repaired by the sensor
``source_changes`` once that week is loaded, as a week whose source changed is.
"""

import time

import dagster as dg

from customer_assets import tables
from customer_assets.partitions import FIRST_WEEK
from customer_assets.weeks import previous_week

PARTITION_TAG = "dagster/partition"
# The steps that open what carries the weeks before; every other asset reads only its own week or
# runs after one of these in its run (test_week_order.py walks the definitions).
ORDER_GATES = (
    tables.key(tables.CUSTOMER_HISTORY),
    tables.key(tables.CUSTOMER_IDENTITY_MAP),
    tables.key(tables.DIM_PRODUCTS),
)
# The assets that read only their own week: a run of the week before selecting only these is not
# waited for.
OWN_WEEK_ONLY = frozenset(
    [
        dg.AssetKey(["source", "transactions"]),
        dg.AssetKey(["landing_zone", "kafka_events"]),
        *(
            dg.AssetKey(["etl", name])
            for name in (
                "raw_transactions",
                "validated_transactions",
                "quarantined_transactions",
                "transaction_anomalies",
                "quality_report",
                "crm_customers",
                "erp_customers",
                "customer_event_aggregates",
            )
        ),
        *(
            tables.key(name)
            for name in (
                tables.DATA_QUALITY_METRICS,
                tables.TRANSACTION_QUARANTINE,
                tables.FLAGGED_TRANSACTIONS,
                tables.PRODUCT_SNAPSHOTS,
                tables.DIM_DATE,
            )
        ),
    ]
)
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
POLL_SECONDS = 5.0


def carries(run: dg.DagsterRun) -> bool:
    """True when ``run`` writes something the next week carries: a whole job, or a selection with
    an asset that reads the weeks before."""
    selection = run.asset_selection
    return selection is None or not selection <= OWN_WEEK_ONLY


def previous_week_runs(context: dg.AssetExecutionContext) -> list[dg.DagsterRun]:
    """The started runs of the week before this one that write what this week carries."""
    if context.partition_key <= FIRST_WEEK:
        return []
    runs = context.instance.get_runs(
        dg.RunsFilter(
            tags={PARTITION_TAG: previous_week(context.partition_key)}, statuses=IN_PROGRESS
        )
    )
    return [run for run in runs if run.run_id != context.run_id and carries(run)]


def after_previous_week(
    context: dg.AssetExecutionContext, wait_seconds: float, poll_seconds: float = POLL_SECONDS
) -> dict:
    """Waits, at most ``wait_seconds``, while a started run of the week before writes what this
    week carries; returns the step's metadata on it (``waited_for_previous_week_s``, and
    ``previous_week_still_running`` when the wait ran out)."""
    started = time.monotonic()
    waited_for: set[str] = set()
    while runs := previous_week_runs(context):
        new = [run.run_id for run in runs if run.run_id not in waited_for]
        if new:
            context.log.info(
                f"waiting for the week before ({previous_week(context.partition_key)}), run(s) "
                f"{', '.join(new)} in progress: this week carries what it writes"
            )
            waited_for.update(new)
        if time.monotonic() - started >= wait_seconds:
            context.log.warning(
                f"the week before still runs after {wait_seconds:.0f} s "
                "(PREVIOUS_WEEK_WAIT_SECONDS): carrying without it; the sensor source_changes "
                "re-runs this week once the week before is loaded"
            )
            return {
                "waited_for_previous_week_s": round(time.monotonic() - started, 1),
                "previous_week_still_running": ", ".join(run.run_id for run in runs),
            }
        time.sleep(poll_seconds)
    return {"waited_for_previous_week_s": round(time.monotonic() - started, 1)}
