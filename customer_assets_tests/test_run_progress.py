"""Where a run is (``cleanup/progress.py``), read at every step's end by the cleanup hook: read on
from the events read before, it says what a fresh read of the whole run's events says."""

from __future__ import annotations

import time

import dagster as dg

from customer_assets.cleanup import progress

SEEN: list[tuple[str, progress.RunProgress, progress.RunProgress]] = []


@dg.success_hook
def compare(context: dg.HookContext) -> None:
    run = context.instance.get_run_by_id(context.run_id)
    read_on = progress.RunProgress.of(context.instance, run, context.step_key, True)
    progress._READ.pop(run.run_id)  # forget what was read: the next read starts from the first
    fresh = progress.RunProgress.of(context.instance, run, context.step_key, True)
    SEEN.append((context.step_key, read_on, fresh))


@dg.asset
def first() -> int:
    return 1


@dg.asset
def second(first: int) -> int:
    return first + 1


@dg.asset
def third(second: int) -> int:
    return second + 1


def test_each_steps_end_reads_on_and_sees_what_a_fresh_read_sees():
    SEEN.clear()
    job = dg.Definitions(
        assets=[first, second, third], jobs=[dg.define_asset_job("chain", hooks={compare})]
    ).resolve_job_def("chain")
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance).success
    assert [step for step, _, _ in SEEN] == ["first", "second", "third"]
    for step, read_on, fresh in SEEN:
        assert read_on == fresh, step
    ended = [sorted(read_on.ended) for _, read_on, _ in SEEN]
    assert ended == [["first"], ["first", "second"], ["first", "second", "third"]]
    assert SEEN[-1][1].outputs == {("first", "result"), ("second", "result"), ("third", "result")}
    assert SEEN[-1][1].steps == {"first", "second", "third"}


def test_a_read_starts_again_from_a_read_made_seconds_before_so_a_late_commit_is_not_lost():
    """On PostgreSQL an event may become visible after one with a higher id. A read that went past
    it (its cursor is beyond) has only a moment before it: the next read starts from the last read
    made ``OVERLAP_SECONDS`` before, and finds it."""
    job = dg.Definitions(
        assets=[first, second, third], jobs=[dg.define_asset_job("plain_chain")]
    ).resolve_job_def("plain_chain")
    with dg.instance_for_test() as instance:
        run_id = job.execute_in_process(instance=instance).run_id
        end = instance.get_records_for_run(run_id).cursor  # after every event of the run
        now = time.monotonic()
        late = progress._Read(marks=[(now - 60, None), (now - 1, end)])  # the last read: just now
        late.add_new(instance, run_id)
        assert late.ended == {"first", "second", "third"}  # read again from the older mark
        assert late.marks[0] == (now - 60, None) and len(late.marks) == 3
        settled = progress._Read(marks=[(now - 60, end)])  # the last read: long ago
        settled.add_new(instance, run_id)
        assert settled.ended == set()  # nothing after it: only what is new is read
