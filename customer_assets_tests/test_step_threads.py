"""The local deployment's executor (``step_threads.py``): independent steps at once on threads of
the run's process, Dagster's plan otherwise (dependencies, failures, hooks, termination). Real runs of
reconstructable jobs on a persistent instance, as ``dagster asset materialize`` and the schedule run
them."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from customer_assets.duck import file_lock, step_connections

ROOT = "STEP_THREADS_TEST_ROOT"  # where the jobs of this module write what the tests read
STEP_SECONDS = "STEP_THREADS_TEST_SECONDS"  # how long long_running runs
# A test's barriers and events, by its root folder: one that aborts mid-wait leaves the next one's
# own intact.
_WAITS: dict[tuple[str, str], threading.Barrier | threading.Event] = {}
_WAITS_LOCK = threading.Lock()


def _root() -> Path:
    return Path(os.environ[ROOT])


def _barrier() -> threading.Barrier:
    with _WAITS_LOCK:
        return _WAITS.setdefault((str(_root()), "barrier"), threading.Barrier(2, timeout=30))


def _event(name: str) -> threading.Event:
    with _WAITS_LOCK:
        return _WAITS.setdefault((str(_root()), name), threading.Event())


def _note(name: str) -> None:
    with open(_root() / "order.txt", "a") as out:
        out.write(name + "\n")


@dg.asset
def left() -> int:
    """Waits for ``right`` to start: the run only succeeds if the two run at once."""
    _barrier().wait()
    _note("left")
    return 1


@dg.asset
def right() -> int:
    _barrier().wait()
    _note("right")
    return 2


@dg.asset
def both(left: int, right: int) -> int:
    _note("both")
    return left + right


@dg.asset
def fails() -> int:
    raise dg.Failure("this step fails")


@dg.asset
def after_failure(fails: int) -> int:
    _note("after_failure")
    return fails


@dg.asset
def slow_independent() -> int:
    time.sleep(1.0)
    _note("slow_independent")
    return 3


@dg.asset
def long_running() -> int:
    """Runs a few seconds, or until interrupted; its ``finally`` runs either way."""
    _note("long_running started")
    try:
        for _ in range(int(os.environ.get(STEP_SECONDS, "3")) * 20):
            time.sleep(0.05)
        _note("long_running ended")
        return 4
    finally:
        _note("long_running finally")


@dg.asset
def after_long(long_running: int) -> int:
    _note("after_long")
    return long_running


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=30))
def flaky() -> int:
    _note("flaky attempt")
    raise RuntimeError("fails, to be retried in 30 s")


@dg.multi_asset(outs={"first": dg.AssetOut(), "second": dg.AssetOut()})
def early():
    """Yields ``first``, then waits for ``uses_first`` to start before yielding ``second``."""
    yield dg.Output(1, "first")
    _note(f"uses_first started before early ended: {_event('uses_first').wait(timeout=10)}")
    yield dg.Output(2, "second")


@dg.asset
def uses_first(first: int) -> int:
    _event("uses_first").set()
    _note("uses_first")
    return first


def _timed(name: str, seconds: float) -> None:
    _note(f"{name} started")
    time.sleep(seconds)
    _note(f"{name} ended")


@dg.asset
def before_alone() -> int:
    """Ends once ``long_beside`` has started: ``alone`` is made ready while it runs."""
    _note("before_alone started")
    _event("long_beside").wait(timeout=30)
    _note("before_alone ended")
    return 6


@dg.asset
def long_beside() -> int:
    _note("long_beside started")
    _event("long_beside").set()
    time.sleep(1.0)
    _note("long_beside ended")
    return 7


@dg.asset(op_tags={"dagster/priority": "1", "customer_assets/runs_alone": "true"})
def alone(before_alone: int) -> int:
    """Ready while ``long_beside`` still runs: waits for it, and nothing starts beside it."""
    _timed("alone", 0.5)
    return before_alone


@dg.asset(op_tags={"dagster/priority": "-1"})  # after the two other roots
def late_root() -> int:
    _timed("late_root", 0.1)
    return 8


@dg.asset
def after_alone(alone: int) -> int:
    _timed("after_alone", 0.1)
    return alone


@dg.asset(op_tags={"dagster/priority": "2"})
def blocker() -> int:
    """Runs first, a few seconds, while ``alone_in_pool`` is held."""
    _timed("blocker", 2.0)
    return 9


@dg.asset(
    pool="alone_pool", op_tags={"dagster/priority": "1", "customer_assets/runs_alone": "true"}
)
def alone_in_pool() -> int:
    _timed("alone_in_pool", 0.1)
    return 10


@dg.asset
def chain_root() -> int:
    _timed("chain_root", 0.0)
    return 11


def _after(name: str, upstream: str, seconds: float = 0.0, **kwargs) -> dg.AssetsDefinition:
    """A step that notes its start and end, ``seconds`` apart, after ``upstream``."""

    @dg.asset(name=name, ins={"upstream": dg.AssetIn(upstream)}, **kwargs)
    def _step(upstream: int) -> int:
        _timed(name, seconds)
        return upstream

    return _step


# ready with chain_1, first in Dagster's own order, and nothing after it
a_leaf = _after("a_leaf", "chain_root")
# a leaf of higher priority: first whatever follows the others
a_urgent_leaf = _after("a_urgent_leaf", "chain_root", op_tags={"dagster/priority": "1"})
chain_1 = _after("chain_1", "chain_root")
chain_2 = _after("chain_2", "chain_1")
chain_3 = _after("chain_3", "chain_2")
# one step, slower than two steps of the chain beside it together
slow_leaf = _after("slow_leaf", "chain_root", 0.8)


# two steps holding week-wide frames, and one that does not
wide_a = _after("wide_a", "chain_root", 0.4, op_tags={"customer_assets/week_wide": "true"})
wide_b = _after("wide_b", "chain_root", 0.4, op_tags={"customer_assets/week_wide": "true"})
narrow = _after("narrow", "chain_root", 0.6)


@dg.success_hook
def noted(context: dg.HookContext):
    _note(f"hook {context.op.name}")


def _job(name: str, assets: list, **executor_config) -> dg.JobDefinition:
    from customer_assets.step_threads import threaded_executor

    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job(name, hooks={noted})],
        executor=threaded_executor.configured(executor_config)
        if executor_config
        else threaded_executor,
    )
    return defs.resolve_job_def(name)


def concurrent_job() -> dg.JobDefinition:
    return _job("concurrent", [left, right, both])


def failing_job() -> dg.JobDefinition:
    return _job("failing", [fails, after_failure, slow_independent])


def serial_job() -> dg.JobDefinition:
    return _job("serial", [slow_independent, fails, after_failure], max_concurrent=1)


def retrying_job() -> dg.JobDefinition:
    return _job("retrying", [flaky])


def early_start_job() -> dg.JobDefinition:
    return _job(
        "early_start",
        [early, uses_first],
        step_dependency_config={"require_upstream_step_success": False},
    )


def alone_job() -> dg.JobDefinition:
    return _job("alone", [before_alone, long_beside, alone, late_root, after_alone])


def held_job() -> dg.JobDefinition:
    return _job("held", [blocker, alone_in_pool])


def chain_job() -> dg.JobDefinition:
    return _job(
        "chain", [chain_root, a_leaf, a_urgent_leaf, chain_1, chain_2, chain_3], max_concurrent=1
    )


def timed_job() -> dg.JobDefinition:
    return _job("timed", [chain_root, slow_leaf, chain_1, chain_2], max_concurrent=1)


def week_wide_job() -> dg.JobDefinition:
    """The week-wide steps one at a time, as WEEK_WIDE_STEPS_AT_ONCE=1 makes the deployment's
    executor (``definitions.py``), with no run configuration."""
    from customer_assets.step_order import with_week_wide_limit
    from customer_assets.step_threads import threaded_executor

    defs = dg.Definitions(
        assets=[chain_root, wide_a, wide_b, narrow],
        jobs=[dg.define_asset_job("week_wide", hooks={noted})],
        executor=with_week_wide_limit(threaded_executor, 1),
    )
    return defs.resolve_job_def("week_wide")


def long_job() -> dg.JobDefinition:
    return _job("long", [long_running, after_long, slow_independent])


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT, str(tmp_path))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance


def _order(tmp_path: Path) -> list[str]:
    path = tmp_path / "order.txt"
    return path.read_text().splitlines() if path.exists() else []


def _run(name: str, instance: dg.DagsterInstance):
    job = dg.build_reconstructable_job("customer_assets_tests.test_step_threads", name)
    return dg.execute_job(job, instance=instance)


def test_independent_steps_run_at_once_and_their_dependants_after(instance, tmp_path):
    result = _run("concurrent_job", instance)
    assert result.success
    assert instance.get_latest_materialization_event(dg.AssetKey("both")) is not None
    order = _order(tmp_path)
    assert set(order[:2]) == {"left", "right"}
    assert order.index("both") > max(order.index("left"), order.index("right"))
    # each step's success hook ran, once, after its step
    assert sorted(o for o in order if o.startswith("hook")) == [
        "hook both",
        "hook left",
        "hook right",
    ]
    assert order.index("hook both") > order.index("both")
    # a step's hooks run before a step that depends on it starts, as in process
    assert max(order.index("hook left"), order.index("hook right")) < order.index("both")


def test_a_failed_step_skips_its_dependants_while_the_others_finish(instance, tmp_path):
    result = _run("failing_job", instance)
    assert not result.success
    assert "after_failure" not in _order(tmp_path)
    assert "slow_independent" in _order(tmp_path)
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["fails"]
    assert "this step fails" in failures[0].step_failure_data.error.message
    started = {
        e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
    }
    assert started == {"fails", "slow_independent"}


def test_one_thread_runs_the_steps_one_at_a_time(instance, tmp_path):
    """max_concurrent 1: the in-process executor's order (a step's own events between its start and
    its end)."""
    result = _run("serial_job", instance)
    assert not result.success
    starts_and_ends = [
        (e.event_type, e.step_key)
        for e in result.all_events
        if e.event_type
        in (
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        )
    ]
    for i in range(0, len(starts_and_ends), 2):
        assert starts_and_ends[i][0] == dg.DagsterEventType.STEP_START
        assert starts_and_ends[i + 1][1] == starts_and_ends[i][1]


def test_step_dependency_config_reaches_the_plan(instance, tmp_path):
    """``require_upstream_step_success: false``, as the in-process executor takes it: a step starts
    once the output it needs is stored, before the step that yields it has ended."""
    result = _run("early_start_job", instance)
    assert result.success
    assert "uses_first started before early ended: True" in _order(tmp_path)


def test_a_step_tagged_to_run_alone_waits_for_the_running_ones_and_nothing_starts_beside_it(
    instance, tmp_path
):
    """``customer_assets/runs_alone`` (the source's read): the step starts once the running steps
    have ended, no step starts until it has ended, and the run then goes on two at a time."""
    from customer_assets.step_threads import RUNS_ALONE_TAG

    assert alone.op.tags[RUNS_ALONE_TAG] == "true"
    result = _run("alone_job", instance)
    assert result.success
    order = [o for o in _order(tmp_path) if not o.startswith("hook")]
    start, end = order.index("alone started"), order.index("alone ended")
    assert end == start + 1  # nothing started or ended while it ran
    assert order.index("long_beside ended") < start  # it waited for the running step
    assert order.index("late_root started") > end  # ready before it, started after it
    assert order.index("after_alone started") > end
    # the others still ran two at a time: the two roots side by side
    assert order.index("long_beside started") < order.index("before_alone ended")


def test_a_week_wide_limit_runs_week_wide_steps_one_at_a_time_and_others_beside_them(
    instance, tmp_path
):
    """WEEK_WIDE_STEPS_AT_ONCE=1 (``with_week_wide_limit``: Dagster's own ``tag_concurrency_limits``
    on ``customer_assets/week_wide``): the two tagged steps never run at once, the untagged one
    runs beside the first of them."""
    result = _run("week_wide_job", instance)
    assert result.success
    order = [o for o in _order(tmp_path) if not o.startswith("hook")]
    spans = {
        name: (order.index(f"{name} started"), order.index(f"{name} ended"))
        for name in ("wide_a", "wide_b", "narrow")
    }
    first, second = sorted([spans["wide_a"], spans["wide_b"]])
    assert first[1] < second[0]  # the second started once the first had ended
    assert spans["narrow"][0] < first[1]  # the untagged step ran beside the first
    for name in ("wide_a", "wide_b", "narrow"):
        assert instance.get_latest_materialization_event(dg.AssetKey(name)) is not None


def test_among_ready_steps_of_one_priority_the_head_of_the_longest_chain_starts_first(
    instance, tmp_path
):
    """When a thread frees up, the ready step with the most steps after it starts (the week's
    chain to the marts before a copy into the warehouse); ``dagster/priority`` still comes first.
    (A first run: no durations known yet.)"""
    result = _run("chain_job", instance)
    assert result.success
    starts = [o.removesuffix(" started") for o in _order(tmp_path) if o.endswith(" started")]
    assert starts[:3] == ["chain_root", "a_urgent_leaf", "chain_1"]
    assert starts.index("a_leaf") > starts.index("chain_1")


def test_once_the_job_has_run_the_slower_path_starts_first(instance, tmp_path):
    """The first run knows no durations: the longer chain in steps first. The next run weighs each
    step by its duration in that run: the slow leaf first."""
    starts = []
    for _ in range(2):
        assert _run("timed_job", instance).success
        order = _order(tmp_path)
        (tmp_path / "order.txt").unlink()
        starts.append([o.removesuffix(" started") for o in order if o.endswith(" started")])
    assert starts[0][:2] == ["chain_root", "chain_1"]
    assert starts[1] == ["chain_root", "slow_leaf", "chain_1", "chain_2"]


def _terminate_when(tmp_path: Path, note: str, signals: int = 1, after: float = 0.3):
    """SIGTERM to this process (what the UI's terminate sends a run worker) ``signals`` times, the
    first ``after`` seconds after a step noted ``note``."""

    def terminate():
        for _ in range(400):
            if note in _order(tmp_path):
                time.sleep(after)
                for _ in range(signals):
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.3)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate)
    killer.start()
    return killer


def _failed_steps(result) -> list[str]:
    return [
        e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]


def _terminated(name: str, instance: dg.DagsterInstance, tmp_path: Path, when: str):
    """The job run, terminated once a step noted ``when``: the failed result and the notes."""
    killer = _terminate_when(tmp_path, when)
    result = _run(name, instance)
    killer.join()
    assert not result.success
    return result, _order(tmp_path)


def test_a_terminated_run_starts_no_other_step_and_lets_the_running_one_end(instance, tmp_path):
    """The running step ends as it would (no exception raised into it), the step after it never
    starts, and the run ends failed."""
    result, order = _terminated("long_job", instance, tmp_path, "long_running started")
    assert "long_running ended" in order
    assert "after_long" not in order
    assert "long_running" not in _failed_steps(result)


def test_a_second_termination_interrupts_the_running_steps(instance, tmp_path, monkeypatch):
    """Terminated twice: the running step is interrupted, its ``finally`` runs, and the run ends in
    seconds, not when the step would have ended."""
    monkeypatch.setenv(STEP_SECONDS, "30")
    killer = _terminate_when(tmp_path, "long_running started", signals=2)
    started = time.monotonic()
    result = _run("long_job", instance)
    killer.join()
    assert time.monotonic() - started < 20
    assert not result.success
    order = _order(tmp_path)
    assert "long_running finally" in order
    assert "long_running ended" not in order
    assert "after_long" not in order
    assert "long_running" in _failed_steps(result)


def test_a_run_terminated_while_a_step_waits_to_run_alone_frees_its_pool_slot(
    tmp_path, monkeypatch
):
    """The step held to run alone has already claimed its pool's slot from the instance: a run
    terminated before it starts ends without it, and gives the slot back (another run would wait
    for it for ever)."""
    monkeypatch.setenv(ROOT, str(tmp_path))
    (tmp_path / "home").mkdir()
    pools = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=pools) as instance:
        _, order = _terminated("held_job", instance, tmp_path, "blocker started")
        assert "blocker ended" in order
        assert "alone_in_pool started" not in order
        info = instance.event_log_storage.get_concurrency_info("alone_pool")
        assert info.claimed_slots == [] and info.pending_steps == []


def test_a_run_terminated_while_it_waits_for_a_retry_ends_without_it(instance, tmp_path):
    """Between two attempts no step runs: the termination is heard all the same, and the retry never
    starts."""
    killer = _terminate_when(tmp_path, "flaky attempt", after=1.0)
    started = time.monotonic()
    result = _run("retrying_job", instance)
    killer.join()
    assert time.monotonic() - started < 15  # the retry would start after 30 s
    assert not result.success
    assert _order(tmp_path).count("flaky attempt") == 1


@pytest.mark.parametrize("in_steps", [False, True])
def test_the_warehouse_file_is_used_by_one_thread_at_a_time(tmp_path, in_steps):
    """Two threads of one process on one DuckDB file take turns (``duck.file_lock``), and one thread
    may open a second connection while it holds one; as two steps (``step_connections``) too."""
    from customer_assets.resources.warehouse_sql import DuckDBWarehouse

    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    inside, overlaps = [], []

    def write(n: int) -> None:
        with step_connections() if in_steps else contextlib.nullcontext():
            _write(n)

    def _write(n: int) -> None:
        for i in range(5):
            with warehouse.get_connection() as con:
                inside.append(n)
                overlaps.append(len(inside))
                con.execute(f"CREATE TABLE IF NOT EXISTS t{n} (i INT)")
                con.execute(f"INSERT INTO t{n} VALUES ({i})")
                with warehouse.get_connection() as again:  # reentrant
                    again.execute(f"SELECT count(*) FROM t{n}").fetchall()
                time.sleep(0.01)
                inside.remove(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1
    with warehouse.get_connection() as con:
        assert con.execute("SELECT count(*) FROM t1").fetchone()[0] == 5
        assert con.execute("SELECT count(*) FROM t2").fetchone()[0] == 5
    assert file_lock(str(tmp_path / "w.duckdb")) is file_lock(str(tmp_path / "." / "w.duckdb"))


def _read_elsewhere(path) -> str:
    """``sum(a)`` of table t, read by another process (empty if it could not open the file)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True)"
            ".execute('SELECT sum(a) FROM t').fetchall()[0][0])",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def test_a_steps_burst_of_statements_opens_the_warehouse_file_once_and_a_pause_releases_it(
    tmp_path, monkeypatch
):
    """In ``step_connections`` (each step of the local executor) statements that follow each other
    open the file once; each use has a transaction of its own (a failed one is rolled back, not
    carried to the next use); a pause longer than ``ANCHOR_IDLE_SECONDS`` releases the file to
    other processes, as the step's end does, with what the step wrote."""
    import customer_assets.duck as duck
    import customer_assets.resources.warehouse_sql as warehouse_sql

    opened = []
    real = warehouse_sql.connect_waiting
    monkeypatch.setattr(
        warehouse_sql, "connect_waiting", lambda *a, **k: opened.append(a[0]) or real(*a, **k)
    )
    monkeypatch.setattr(duck, "ANCHOR_IDLE_SECONDS", 0.5)
    path = tmp_path / "w.duckdb"
    warehouse = warehouse_sql.DuckDBWarehouse(database=str(path))
    with step_connections():
        warehouse.execute("CREATE TABLE t AS SELECT 1 AS a")
        with pytest.raises(RuntimeError), warehouse.get_connection() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("the step fails mid-transaction")
        for _ in range(5):
            assert warehouse.query("SELECT count(*) AS n FROM t")["n"].iloc[0] == 1
        assert (
            str(warehouse.query("SELECT current_setting('TimeZone') AS tz")["tz"].iloc[0]) == "UTC"
        )
        assert len(opened) == 1
        time.sleep(1.5)
        assert _read_elsewhere(path) == "1"  # the pause released it
        warehouse.execute("INSERT INTO t VALUES (5)")
        assert len(opened) == 2
    assert _read_elsewhere(path) == "6"  # the step's end released it
    # outside a step, each use opens the file
    warehouse.query("SELECT 1 AS one")
    warehouse.query("SELECT 1 AS one")
    assert len(opened) == 4
