"""This project's weeks, every asset of the local deployment in process: ``python -m
benchmarks.pipeline_run``.

Runs the deployment's ``weekly_customer_pipeline`` job once per week (consecutive weeks in one
process for a backfill) through ``dagster.execute_job``, the path a schedule, sensor or ``dagster
job launch`` takes, with the local deployment's in-process executor.
(``materialize``/``execute_in_process`` would also keep every step's output in memory for the result
object, which a real run does not.) Per step: wall seconds from the STEP_START / STEP_SUCCESS
timestamps of the Dagster event log, rows from the materializations' ``dagster/row_count``, and the
peak RSS sampled by a background thread within the step's window. Per week: wall seconds, the
sampled peak RSS within the week's window (between steps included) and the RSS once the week's run
has returned. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta

import psutil

SAMPLE_SECONDS = 0.01


class RssSampler(threading.Thread):
    """Samples the process RSS every few milliseconds: (monotonic-ish wall time, bytes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._process = psutil.Process()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.time(), self._process.memory_info().rss))
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append((time.time(), self._process.memory_info().rss))

    def _index(self, t: float) -> int:
        """Position of the first sample at or after ``t`` (samples are in time order)."""
        return bisect.bisect_left(self.samples, (t, -1))

    def first_mb(self, start: float) -> float:
        """RSS at the first sample at or after ``start``: what the step started with."""
        i = self._index(start)
        return self.samples[i][1] / 2**20 if i < len(self.samples) else 0.0

    def peak_mb(self, start: float, end: float) -> float:
        inside = self.samples[
            self._index(start) : bisect.bisect_right(self.samples, (end, float("inf")))
        ]
        return max((rss for _, rss in inside), default=0) / 2**20

    def growth(self) -> dict:
        """After ``stop``: the RSS at the first sample (what the inputs held), the peak, and the
        peak's growth over the first, in MB."""
        base = self.samples[0][1] / 2**20
        peak = self.peak_mb(0, float("inf"))
        return {
            "inputs_rss_mb": round(base),
            "peak_rss_mb": round(peak),
            "growth_mb": round(peak - base),
        }


def each_size(module: str, measure, argv: list[str] | None, line) -> None:
    """The command line of a benchmark that measures sizes of customers each in a fresh process
    (``python -m module --probe N`` prints ``measure(N)``, a dict with ``growth_mb``, as JSON): one
    printed ``line(result)`` per size, then the ratio of the growths between the largest and the
    smallest size."""
    parser = argparse.ArgumentParser(description=f"python -m {module}: see its docstring")
    parser.add_argument("--customers", default="300000,1000000")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(measure(args.probe)))
        return
    sizes = [int(n) for n in args.customers.split(",")]
    growth = {}
    for customers in sizes:
        out = subprocess.run(
            [sys.executable, "-m", module, "--probe", str(customers)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        growth[customers] = r["growth_mb"]
        print(line(r), flush=True)
    small, large = sizes[0], sizes[-1]
    print(
        f"growth at {large:,} / growth at {small:,} customers = "
        f"{growth[large] / max(growth[small], 1):.2f}"
    )


def _steps(instance, run_id: str, sampler: RssSampler) -> list[dict]:
    import dagster as dg

    steps: dict[str, dict] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        step = steps.setdefault(event.step_key, {"step": event.step_key, "assets": [], "rows": {}})
        if event.event_type == dg.DagsterEventType.STEP_START:
            step["start"] = entry.timestamp
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            step["end"] = entry.timestamp
            step["status"] = (
                "success" if event.event_type == dg.DagsterEventType.STEP_SUCCESS else "failure"
            )
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            step["assets"].append(key)
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                step["rows"][key] = int(count.value)
    out = []
    for step in sorted(steps.values(), key=lambda s: s.get("start", 0)):
        if "start" in step and "end" in step:
            step["seconds"] = step["end"] - step["start"]
            step["peak_rss_mb"] = sampler.peak_mb(step["start"], step["end"])
            step["start_rss_mb"] = sampler.first_mb(step["start"])
            out.append(step)
    return out


def weekly_job():
    """The job a schedule runs (``customer_assets.definitions``), resolved with the deployment's
    resources."""
    from customer_assets.definitions import defs

    return defs.get_job_def("weekly_customer_pipeline")


def _run_config() -> dict | None:
    """BENCHMARK_MAX_CONCURRENT: the executor's max_concurrent (steps at once on threads); unset: the
    deployment's default. (WEEK_WIDE_STEPS_AT_ONCE reaches the pipeline as it is: a setting.)"""
    concurrent = os.environ.get("BENCHMARK_MAX_CONCURRENT")
    return {"execution": {"config": {"max_concurrent": int(concurrent)}}} if concurrent else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--last-week", required=True, help="partition key of the last week, e.g. 2026-11-16"
    )
    p.add_argument("--weeks", type=int, default=1, help="consecutive weeks ending with --last-week")
    a = p.parse_args(argv)

    import dagster as dg

    job = dg.build_reconstructable_job("benchmarks.pipeline_run", "weekly_job")
    last = date.fromisoformat(a.last_week)
    weeks = [(last - timedelta(weeks=a.weeks - 1 - i)).isoformat() for i in range(a.weeks)]
    # An instance on disk (SQLite), as a deployment has: the ephemeral one keeps every run's event
    # log in the process, which grew its memory (and its garbage collections) with every week of a
    # long backfill.
    # BENCHMARK_INSTANCE_DIR: an instance kept between processes, so a week finds the week before's
    # materializations and carries its history, as the schedule's runs do.
    kept = os.environ.get("BENCHMARK_INSTANCE_DIR")
    if kept:
        os.makedirs(kept, exist_ok=True)
    instance = dg.DagsterInstance.from_config(kept) if kept else dg.DagsterInstance.local_temp()
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    runs = []
    profiler = None
    # a path: the run's cProfile stats go there (slower run)
    if os.environ.get("BENCHMARK_CPROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    process = psutil.Process()
    run_config = _run_config()
    for week in weeks:
        week_started, wall_start = time.perf_counter(), time.time()
        result = dg.execute_job(
            job,
            instance=instance,
            tags={"dagster/partition": week},
            run_config=run_config,
            raise_on_error=True,
        )
        runs.append(
            {
                "week": week,
                "seconds": time.perf_counter() - week_started,
                "run_id": result.run_id,
                "window": (wall_start, time.time()),
                "rss_after_mb": process.memory_info().rss / 2**20,
            }
        )
    total = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["BENCHMARK_CPROFILE"])
    sampler.stop()
    for run in runs:
        run["steps"] = _steps(instance, run.pop("run_id"), sampler)
        # this week's sampled peak, not the high-water mark
        run["peak_rss_mb"] = sampler.peak_mb(*run.pop("window"))
    json.dump(
        {
            "weeks": runs,
            "total_seconds": total,
            "peak_rss_mb": max(rss for _, rss in sampler.samples) / 2**20,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
