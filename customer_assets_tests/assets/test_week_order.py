"""Weeks run at once keep their order (``assets/week_order.py``): the carried steps wait for a
started run of the week before, on a real Dagster instance; every asset is either of its own week
or ordered behind a waiting step (derived from the definitions); and the sensor repairs a week
carried without the week before."""

import threading
import time
import uuid

import dagster as dg
import pytest

from customer_assets import tables
from customer_assets.assets.week_order import (
    ORDER_GATES,
    OWN_WEEK_ONLY,
    PARTITION_TAG,
    after_previous_week,
)
from customer_assets.definitions import defs
from customer_assets.late_changes import weeks_to_repair
from customer_assets.weeks import previous_week

WEEK = "2026-11-16"
BEFORE = previous_week(WEEK)
RAW = dg.AssetKey(["etl", "raw_transactions"])
IDENTITY = tables.key(tables.CUSTOMER_IDENTITY_MAP)
HISTORY = tables.key(tables.CUSTOMER_HISTORY)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def add_run(
    instance: dg.DagsterInstance,
    week: str,
    status: dg.DagsterRunStatus,
    selection: frozenset[dg.AssetKey] | None = None,
) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="weekly_customer_pipeline",
        run_id=str(uuid.uuid4()),
        status=status,
        tags={PARTITION_TAG: week},
        asset_selection=selection,
    )
    return instance.add_run(run)


def context_of(instance: dg.DagsterInstance, week: str = WEEK):
    return dg.build_asset_context(instance=instance, partition_key=week)


def test_a_week_waits_for_a_started_run_of_the_week_before_until_it_ends(instance):
    running = add_run(instance, BEFORE, dg.DagsterRunStatus.STARTED)
    ends = threading.Timer(1.5, instance.report_run_failed, args=[running])
    ends.start()
    started = time.monotonic()
    metadata = after_previous_week(context_of(instance), wait_seconds=60, poll_seconds=0.2)
    took = time.monotonic() - started
    ends.join()
    assert 1.4 <= took < 30
    assert metadata["waited_for_previous_week_s"] >= 1.4
    assert "previous_week_still_running" not in metadata
    assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize(
    "week, status, selection, why",
    [
        (BEFORE, dg.DagsterRunStatus.NOT_STARTED, None, "not started: it may wait behind this run"),
        (BEFORE, dg.DagsterRunStatus.SUCCESS, None, "ended"),
        (
            BEFORE,
            dg.DagsterRunStatus.STARTED,
            frozenset({RAW, dg.AssetKey(["etl", "validated_transactions"])}),
            "writes only what its own week reads",
        ),
        (previous_week(BEFORE), dg.DagsterRunStatus.STARTED, None, "two weeks before"),
        (WEEK, dg.DagsterRunStatus.STARTED, None, "the same week"),
    ],
)
def test_a_week_does_not_wait_for_a_run_it_does_not_carry(instance, week, status, selection, why):
    add_run(instance, week, status, selection)
    metadata = after_previous_week(context_of(instance), wait_seconds=60, poll_seconds=0.2)
    assert metadata == {"waited_for_previous_week_s": pytest.approx(0, abs=0.5)}, why


def test_the_wait_is_bounded_and_says_which_run_still_runs(instance):
    running = add_run(instance, BEFORE, dg.DagsterRunStatus.STARTED, frozenset({HISTORY}))
    metadata = after_previous_week(context_of(instance), wait_seconds=1, poll_seconds=0.2)
    assert 1 <= metadata["waited_for_previous_week_s"] < 10
    assert metadata["previous_week_still_running"] == running.run_id


def test_the_first_week_waits_for_nothing(instance):
    first = dg.build_asset_context(instance=instance, partition_key="2026-08-31")
    add_run(instance, previous_week("2026-08-31"), dg.DagsterRunStatus.STARTED)
    assert after_previous_week(first, wait_seconds=60, poll_seconds=0.2) == {
        "waited_for_previous_week_s": pytest.approx(0, abs=0.5)
    }


def _job_graph():
    job = defs.resolve_job_def("weekly_customer_pipeline")
    return job.asset_layer.asset_graph


def test_every_asset_reads_its_own_week_or_runs_behind_a_step_that_waits():
    """An asset added later that reads other weeks, and is neither behind a step that waits
    (``customer_history``, ``customer_identity_map``, ``dim_products``) in the run nor declared of
    its own week, fails here."""
    graph = _job_graph()
    keys = {key for key in graph.get_all_asset_keys() if graph.get(key).is_executable}
    # a gate's step waits: every output of that step is behind it (the identity step's merges)
    waiting = {key for gate in ORDER_GATES for key in graph.get(gate).assets_def.keys}
    behind = set().union(*(_descendants(graph, key) for key in waiting))
    unordered = keys - behind - OWN_WEEK_ONLY
    assert not unordered, (
        f"{sorted(k.to_user_string() for k in unordered)} neither read only their own week "
        "(week_order.OWN_WEEK_ONLY) nor run after a step that waits for the week before "
        "(week_order.ORDER_GATES)"
    )
    assert graph.get_all_asset_keys() >= OWN_WEEK_ONLY, "a key of OWN_WEEK_ONLY is no asset"
    assert not OWN_WEEK_ONLY & behind, "an asset both of its own week and carried"


def _descendants(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    found, todo = {key}, [key]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_no_asset_depends_on_its_own_earlier_weeks():
    """A self-dependent asset is run by an asset backfill (the UI's Materialize over a range of
    weeks) in runs of its own, without the week's intermediates: the carry goes through the
    warehouse and the instance, ordered by ``week_order.py``."""
    graph = _job_graph()
    selfdependent = [
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if key in graph.get(key).parent_keys
    ]
    assert selfdependent == []


def materialize(instance, key: dg.AssetKey, week: str, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, partition=week, metadata=metadata)
    )


def load(instance, week: str, carried_from: str) -> None:
    """A week as its run records it: the extract (no source version: not a late change) and the
    identity, carried from ``carried_from``."""
    materialize(instance, RAW, week)
    materialize(instance, IDENTITY, week, carried_from=carried_from)


def test_a_week_whose_identity_was_carried_without_the_week_before_is_repaired(instance):
    weeks = ["2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23"]
    load(instance, weeks[0], "nothing (first week)")
    # 11-16 ran at once with 11-09 and carried 11-02's identity; 11-09 was loaded after it
    load(instance, weeks[2], weeks[0])
    load(instance, weeks[1], weeks[0])
    load(instance, weeks[3], weeks[2])
    rerun, reasons = weeks_to_repair(instance, weeks, {})
    assert rerun == weeks[2:]
    assert reasons == {
        weeks[2]: f"identity carried from {weeks[0]}, not from the week before ({weeks[1]}), "
        "loaded since"
    }


def test_an_identity_carried_in_order_or_from_a_later_week_is_not_repaired(instance):
    weeks = ["2026-11-02", "2026-11-09", "2026-11-16"]
    # the weeks in order, then 11-02 re-run after them: it carries the newest week's ids, as meant
    load(instance, weeks[1], weeks[0])
    load(instance, weeks[2], weeks[1])
    load(instance, weeks[0], weeks[2])
    assert weeks_to_repair(instance, weeks, {}) == ([], {})
