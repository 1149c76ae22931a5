"""What every asset of the weekly pipeline shares: partitions, owners, the week's context."""

import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets import tables
from customer_assets.frames import StoredFrame, duplicated_values
from customer_assets.io_managers.parquet import FinishedWeek
from customer_assets.logic.checks import CheckOutcome
from customer_assets.partitions import weekly_partitions
from customer_assets.settings import PipelineSettings
from customer_assets.step_order import WEEK_WIDE_TAG
from customer_assets.step_threads import RUNS_ALONE_TAG
from customer_assets.weeks import WeekContext

ETL = "etl"
WAREHOUSE = tables.SCHEMA
OWNERS = ["team:data-engineering"]
PARTITIONS = weekly_partitions
# The source's read of the week's transactions starts first and runs alone (the local executor's
# RUNS_ALONE_TAG): the snapshot it holds on the production database lasts as long as the read, and
# the read shares the machine with the server's backend only.
SOURCE_READ = {"dagster/priority": "1", RUNS_ALONE_TAG: "true"}
# The steps that hold frames growing with the week's rows or its customers (validation, the
# transform, the CRM's records, the identity, the profiles): WEEK_WIDE_STEPS_AT_ONCE limits them.
WEEK_WIDE = {WEEK_WIDE_TAG: "true"}


def week_context(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> WeekContext:
    return WeekContext.of(context.partition_key)


def check_spec(name: str, asset: dg.AssetKey | str, **kwargs) -> dg.AssetCheckSpec:
    """A check of one week: recorded per partition, so the UI shows which week passed or failed
    (partitioned checks are a Dagster preview; dagster is pinned in pyproject.toml)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=PARTITIONS, **kwargs)


def check_result(
    asset_key: dg.AssetKey, name: str, outcome: CheckOutcome, **figures
) -> dg.AssetCheckResult:
    """A check's outcome as Dagster records it: its severity, the sentence saying why, and its
    figures."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity[outcome.severity],
        metadata={"result": dg.MetadataValue.md(outcome.description), **figures},
    )


def metadata_value(record, name: str):
    """The value of metadata entry ``name`` of a materialization record (None without the record or
    entry)."""
    entry = (
        record.asset_materialization.metadata.get(name)
        if record and record.asset_materialization
        else None
    )
    return entry.value if entry is not None else None


@cache
def _or_finished(python_type: type) -> dg.DagsterType:
    return dg.DagsterType(
        name=f"{python_type.__name__}OrFinishedWeek",
        typing_type=python_type,
        description=f"{python_type.__name__}, or FinishedWeek when the week succeeded and its intermediates are gone",
        type_check_fn=lambda _, value: isinstance(value, (python_type, FinishedWeek)),
    )


def optional_out(key_prefix: list[str] | None = None, **kwargs) -> dg.AssetOut:
    """An output of a subsettable multi-asset: the team's, and not required (a step whose week is
    finished yields nothing). An intermediate (``etl/``) unless ``key`` or ``key_prefix`` says
    otherwise."""
    if "key" not in kwargs:
        kwargs["key_prefix"] = key_prefix or [ETL]
    return dg.AssetOut(is_required=False, owners=OWNERS, **kwargs)


def intermediate(name: str, python_type: type = pd.DataFrame, **kwargs) -> dg.AssetIn:
    """An input read from the week's intermediate ``etl/<name>``: the stored value, or a
    ``FinishedWeek`` when the week already succeeded (its intermediates hold customer rows, so the
    summary removed them)."""
    return dg.AssetIn(key=[ETL, name], dagster_type=_or_finished(python_type), **kwargs)


def selected_events(context: dg.AssetExecutionContext, events):
    """Only the outputs and check results the run selected, for a subsettable multi-asset."""
    # in a run, the selected subset, whose definition no longer names the outputs left out;
    # invoked directly, the whole asset
    assets_def = context.assets_def
    for event in events:
        selected = (
            assets_def.keys_by_output_name.get(event.output_name) in assets_def.keys
            if isinstance(event, dg.Output)
            else dg.AssetCheckKey(event.asset_key, event.check_name) in assets_def.check_keys
        )
        if selected:
            yield event


def finished_week(context: dg.AssetExecutionContext, *inputs) -> bool:
    """True, with the reason in the run's log, when an input's week already succeeded and was
    cleaned up.

    The step then materializes nothing: re-materializing one asset of a finished week alone has no
    input to work on, and the warehouse still holds the week as its last run loaded it, so the
    asset's week keeps its status instead of turning red. To rebuild a finished week, materialize it
    from etl/raw_transactions.
    """
    gone = [value for value in inputs if isinstance(value, FinishedWeek)]
    if gone:
        context.log.warning(
            f"Week {gone[0].week} already succeeded (run {gone[0].finished_by_run}), which removed its "
            f"intermediates ({', '.join(g.asset for g in gone)}): nothing to do, the warehouse keeps the week as "
            "that run loaded it. To rebuild the week, materialize it from etl/raw_transactions (or the whole "
            "week) instead of this asset alone."
        )
    return bool(gone)


# The tag of an asset whose step keeps files of the week under etl/ while it works
# (``working_files``). The run summary removes every file of the week there, so each tagged asset
# must be upstream of it: the summary waits for every weekly asset (``summary.with_summary_last``),
# ``test_definitions`` checks it over the definitions, and ``working_files`` refuses a step whose
# asset lacks the tag.
WORKING_FILES_TAG = "working_files"


def keeps_working_files() -> dict[str, str]:
    """The tags of an asset whose step calls ``working_files``. Set in the asset's decorator."""
    return {WORKING_FILES_TAG: ETL}


def working_files(
    context: dg.AssetExecutionContext, settings: PipelineSettings, key: dg.AssetKey, *kinds: str
) -> tuple[Path, ...]:
    """Where the step of ``key`` keeps the week's files while it works (``<week>.<kind>.parquet``):
    under the data dir's etl/ folder, named after the week, so the week's cleanup takes them should
    the step die before removing them itself."""
    if WORKING_FILES_TAG not in context.assets_def.tags_by_key.get(key, {}):
        raise dg.DagsterInvariantViolationError(
            f"{key.to_user_string()} keeps files under {ETL}/ while it works: tag it "
            "keeps_working_files(), so that the run summary, which removes them, waits for it"
        )
    folder = Path(settings.data_dir, ETL, *key.path[-1:])
    return tuple(folder / f"{context.partition_key}.{kind}.parquet" for kind in kinds)


def check_stored_rows(
    stored: StoredFrame, check: Callable[[pd.DataFrame], None], unique: str | None = None
) -> None:
    """Every row of a stored week against ``check`` (a model's), a batch at a time, and ``unique``
    once over the whole file."""
    for batch in stored.batches():
        check(batch)
    if unique and (repeated := duplicated_values(stored.path, [unique])[unique]):
        raise dg.Failure(f"{stored.path.name}: {repeated} row(s) repeat a {unique}")
