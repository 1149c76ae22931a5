"""The benchmark keeps working: a tiny scale end to end in a subprocess (not a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_benchmark_runs_at_a_tiny_scale(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--scale",
            "0.002",
            "--weeks",
            "2",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["floor"]["rows"]
    assert rows > 0
    for kind in ("floor", "naive", "extract"):
        assert result[kind]["rows"] == rows
        assert result[kind]["seconds"] > 0 and result[kind]["peak_rss_mb"] > 0
    week = result["week_run"]
    assert week["rows"] == rows and week["seconds"] > 0 and week["peak_rss_mb"] > 0
    steps = {step["step"]: step for step in week["steps"]}
    assert {
        "etl__raw_transactions",
        "validate_transactions",
        "etl__transformed_transactions",
        "customer_analytics__weekly_transactions",
        "etl__pipeline_summary",
    } <= set(steps)
    assert all(step["seconds"] > 0 and step["peak_rss_mb"] > 0 for step in steps.values())
    validated = steps["validate_transactions"]["rows_by_asset"]
    assert (
        validated["etl/validated_transactions"] + validated["etl/quarantined_transactions"] == rows
    )
    assert (
        steps["customer_analytics__weekly_transactions"]["rows"]
        == validated["etl/validated_transactions"]
    )
    # steps at once: their seconds may add up to more than the week, their busy time may not
    assert 0 < week["steps_busy_seconds"] <= week["seconds"]
    assert week["steps_busy_seconds"] <= week["steps_seconds"]
    assert set(result["ratios"]) >= {"extract_over_floor", "week_over_floor", "naive_over_extract"}
    assert all(value > 0 for value in result["ratios"].values())
    assert "whole week" in proc.stdout
    backfill = result["backfill"]  # two weeks in one process; the second is the week measured alone
    assert backfill["weeks"] == 2 and len(backfill["per_week_seconds"]) == 2
    assert all(rows > 0 for rows in backfill["rows"]) and backfill["rows"][-1] == rows
    assert backfill["total_over_n_one_week"] > 0 and "backfill: 2 weeks" in proc.stdout


@pytest.mark.timeout(120)
def test_years_mode_runs_at_a_tiny_scale(tmp_path):
    out = tmp_path / "years.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--years",
            "4",
            "--rows-per-week",
            "1500",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--plot-copy",
            str(tmp_path / "copy.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    years = result["years"]
    # four consecutive Mondays ending with the seed's last week, each run in a fresh process
    weeks = years["weeks"]
    assert [w["week_number"] for w in weeks] == [1, 2, 3, 4]
    assert [w["partition"] for w in weeks] == [
        "2026-10-26",
        "2026-11-02",
        "2026-11-09",
        "2026-11-16",
    ]
    for week in weeks:
        assert week["rows"] > 0 and week["seconds"] > 0 and week["peak_rss_mb"] > 0
        assert 0 < week["branch_seconds"] < week["seconds"]
        assert week["peak_rss_mb"] <= years["high_water_rss_mb"]
    # picked by asset key; customer_history where the job has it
    branch = set(years["branch_steps"])
    assert {
        "etl__raw_transactions",
        "validate_transactions",
        "etl__transformed_transactions",
        "customer_analytics__weekly_transactions",
    } <= branch
    assert not branch & {
        "etl__customer_event_aggregates",
        "etl__unified_customer_profiles",
        "etl__pipeline_summary",
    }
    plain = years["plain"]  # the same week's extract, every row validated or quarantined
    assert plain["rows"] == weeks[-1]["rows"]
    assert plain["validated"] + plain["quarantined"] == plain["rows"] and plain["quarantined"] > 0
    assert plain["seconds"] > 0 and plain["peak_rss_mb"] > 0
    ratios = years["ratios"]
    assert set(ratios) == {
        "time_last_over_first",
        "rss_last_over_first",
        "time_last4_over_weeks2to5",
        "rss_last4_over_weeks2to5",
        "plain_over_branch",
    }
    assert all(value > 0 for value in ratios.values())
    assert "plain script / transaction branch" in proc.stdout and "2026-11-16" in proc.stdout
    assert out.with_suffix(".png").stat().st_size > 0 and (tmp_path / "copy.png").stat().st_size > 0


@pytest.mark.parametrize("rows", [1_000, 600_000, 10_000_000, 30_000_000])
def test_a_sweep_point_of_any_size_is_a_valid_seed(rows):
    """The issue's 10M-row week (about 3M customers) failed before it seeded: the catalogue, scaled
    with the week, reached the product ids the seed keeps for unknown products."""
    from benchmarks.source import scaled_config
    from customer_assets.demo.seed_vocabulary import UNKNOWN_CUSTOMER_BASE, UNKNOWN_PRODUCT_BASE

    config = scaled_config(1.0, weeks=2, rows_per_week=rows)
    assert config.transactions_per_week == max(1_000, rows)
    scaled = max(500, round(200_000 * rows / 600_000))
    assert config.customers == min(scaled, UNKNOWN_CUSTOMER_BASE - 1)
    assert 50 <= config.products < UNKNOWN_PRODUCT_BASE
