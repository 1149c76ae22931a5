"""The asset checks that run as steps of their own: the warehouse table's checks (ids unique
within the window, the rows the load wrote, the week's volume) and the trailing-band checks of
weekly figures (``band_check``).

Checks computed by the asset that writes the data are declared in its decorator (``check_specs``)
instead. Each check's outcome is a plain value of ``logic/checks.py``; the warehouse's side of a
check is ``sql/checks.py``.
"""

import dagster as dg

from customer_assets import tables
from customer_assets.alerts import Alerts, alert_failed_checks
from customer_assets.assets.common import check_result, check_spec, metadata_value
from customer_assets.assets.marts import CHURN, SALES
from customer_assets.assets.warehouse import UNIQUE_WITHIN_WEEKS
from customer_assets.io_managers.warehouse import unique_window
from customer_assets.logic import checks
from customer_assets.partitions import FIRST_WEEK, latest_materialization
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.sql.checks import duplicated_ids, rows_in_week
from customer_assets.weeks import previous_week, week_bounds

TRANSACTIONS = tables.key(tables.WEEKLY_TRANSACTIONS)
QUALITY_METRICS = tables.key(tables.DATA_QUALITY_METRICS)
TRAILING_WEEKS = 8


def trailing_values(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str,
    metadata_key: str,
    weeks: int = TRAILING_WEEKS,
) -> list[float]:
    """``metadata_key`` of the latest materialization of each of the ``weeks`` weeks before
    ``partition`` that were loaded (oldest first): the band's history, read from the event log, not
    by scanning the warehouse."""
    earlier, week = [], partition
    while len(earlier) < weeks and week > FIRST_WEEK:
        week = previous_week(week)
        earlier.append(week)
    values = [
        metadata_value(latest_materialization(instance, key, w), metadata_key)
        for w in reversed(earlier)
    ]
    return [float(v) for v in values if v is not None]


@dg.multi_asset_check(
    specs=[
        check_spec(
            "transaction_ids_unique",
            TRANSACTIONS,
            blocking=True,
            description="transaction_id is unique: no id of the week is held twice, within the week or by "
            f"another week up to {UNIQUE_WITHIN_WEEKS} weeks away (a transaction whose timestamp moved was "
            "moved, not copied). Reads those weeks only, so its cost does not grow with the history.",
        ),
        check_spec(
            "loaded_rows_match",
            TRANSACTIONS,
            blocking=True,
            description="The warehouse holds exactly the rows the week's load wrote, inside the week's "
            "time window.",
        ),
        check_spec(
            "weekly_volume",
            TRANSACTIONS,
            description=f"Warns when the week's row count leaves mean ± 3σ of the previous "
            f"{TRAILING_WEEKS} loaded weeks (the week excluded), or is zero while they were not.",
        ),
    ],
)
def weekly_transactions_checks(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseSQL, alerts: Alerts
):
    week = context.op_execution_context.partition_key
    week_start, week_end = week_bounds(week)
    window = unique_window(week_start, week_end, UNIQUE_WITHIN_WEEKS)
    duplicated = duplicated_ids(warehouse, TRANSACTIONS.path, (week_start, week_end), window)
    examples = duplicated.head(5)
    in_week = rows_in_week(warehouse, TRANSACTIONS.path, (week_start, week_end))
    loaded = metadata_value(
        latest_materialization(context.instance, TRANSACTIONS, week), "dagster/row_count"
    )
    trailing = trailing_values(context.instance, TRANSACTIONS, week, "dagster/row_count")
    results = [
        check_result(
            TRANSACTIONS,
            "transaction_ids_unique",
            checks.ids_unique(len(duplicated), UNIQUE_WITHIN_WEEKS),
            duplicated_ids=len(duplicated),
            window_weeks=UNIQUE_WITHIN_WEEKS,
            examples=dg.MetadataValue.md(
                examples.to_markdown(index=False) if len(examples) else "none"
            ),
        ),
        check_result(
            TRANSACTIONS,
            "loaded_rows_match",
            checks.rows_match(in_week, loaded),
            rows_in_week=in_week,
            rows_loaded=loaded if loaded is not None else -1,
        ),
        check_result(
            TRANSACTIONS,
            "weekly_volume",
            checks.within_band("rows", in_week, trailing),
            rows=in_week,
        ),
    ]
    alert_failed_checks(alerts, results, week, context.log)
    yield from results


def band_check(
    key: dg.AssetKey,
    metric: str,
    label: str,
    unit: str = "",
    name: str | None = None,
    weeks_kind: str = "weeks",
):
    """A check of one weekly figure (``metric`` metadata of ``key``): WARN, and alert, when the
    week's value leaves mean ± 3σ of the previous weeks' (the week excluded)."""

    @dg.multi_asset_check(
        specs=[
            check_spec(
                f"{metric}_band",
                key,
                # the summary waits for it (its report counts the week's warnings); a WARN
                # never stops the week, since blocking checks stop only on ERROR
                blocking=True,
                description=(
                    f"Warns when the week's {label} leaves mean ± 3σ of the previous {TRAILING_WEEKS} {weeks_kind} (the week "
                    "excluded)."
                ),
            )
        ],
        name=name or f"{key.path[-1]}__{metric}_band",
    )
    def band(context: dg.AssetCheckExecutionContext, alerts: Alerts):
        week = context.op_execution_context.partition_key
        value = float(
            metadata_value(latest_materialization(context.instance, key, week), metric) or 0.0
        )
        outcome = checks.within_band(
            label, value, trailing_values(context.instance, key, week, metric), unit
        )
        result = check_result(key, f"{metric}_band", outcome, **{metric: value})
        alert_failed_checks(alerts, [result], week, context.log)
        yield result

    return band


quality_score_band = band_check(
    QUALITY_METRICS,
    "quality_score",
    "quality score",
    "%",
    name="quality_score_band",
    weeks_kind="loaded weeks",
)
revenue_band = band_check(SALES, "revenue_usd", "revenue (USD)")
orders_band = band_check(SALES, "orders", "orders")
churn_rate_band = band_check(CHURN, "churn_rate_pct", "churn rate (%)")
