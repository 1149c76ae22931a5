"""The memory benchmarks keep working: each at two tiny sizes, each size in its own process, as
they are run (not timed tests). What they print is checked against the inputs they build."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1000, 2000)


def _run(module: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--customers", ",".join(map(str, SIZES))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def _rss(line: str) -> tuple[int, int, int]:
    start, peak, growth = re.search(
        r"RSS +([\d,]+) -> +([\d,]+) MB \(\+?(-?[\d,]+)\)", line
    ).groups()
    return tuple(int(n.replace(",", "")) for n in (start, peak, growth))


@pytest.mark.timeout(180)
def test_identity_memory_carries_the_persons_its_inputs_hold():
    *sizes, ratio = _run("benchmarks.identity_memory")
    assert len(sizes) == len(SIZES)
    for customers, line in zip(SIZES, sizes, strict=True):
        shown = re.search(
            r"([\d,]+) customers +([\d,]+) records .* new +([\d,]+) +merged +([\d,]+)", line
        )
        shown = [int(n.replace(",", "")) for n in shown.groups()]
        new = customers // 100  # a CRM and a shop record each, as the inputs build them
        assert shown == [customers, 2 * (customers + new), new, max(1, customers // 1000)]
        start, peak, growth = _rss(line)
        assert 0 < start <= peak and abs(growth - (peak - start)) <= 1  # each rounded
    assert ratio.startswith(f"growth at {SIZES[-1]:,} / growth at {SIZES[0]:,} customers = ")


@pytest.mark.timeout(180)
def test_profiles_memory_builds_a_profile_per_person_seen():
    from benchmarks.profiles_memory import inputs

    *sizes, ratio = _run("benchmarks.profiles_memory")
    assert len(sizes) == len(SIZES)
    for customers, line in zip(SIZES, sizes, strict=True):
        week = inputs(customers)
        seen = set().union(
            *(set(week[name]["customer_id"]) for name in ("crm", "events", "transactions"))
        )
        shown = re.search(r"([\d,]+) customers +([\d,]+) profiles", line).groups()
        assert [int(n.replace(",", "")) for n in shown] == [customers, len(seen)]
        start, peak, growth = _rss(line)
        assert 0 < start <= peak and abs(growth - (peak - start)) <= 1  # each rounded
    assert ratio.startswith(f"growth at {SIZES[-1]:,} / growth at {SIZES[0]:,} customers = ")


@pytest.mark.timeout(180)
def test_history_memory_reads_the_same_rows_both_ways():
    lines = _run("benchmarks.history_memory")
    rows = {}
    for line in lines[: 2 * len(SIZES)]:
        found = re.search(r"([\d,]+) customers +(frames|files) +([\d,]+) rows", line).groups()
        rows[(int(found[0].replace(",", "")), found[1])] = int(found[2].replace(",", ""))
    assert set(rows) == {(n, way) for n in SIZES for way in ("frames", "files")}
    for customers in SIZES:
        assert rows[(customers, "frames")] == rows[(customers, "files")] > 0
    assert [line.split(":")[0] for line in lines[2 * len(SIZES) :]] == ["frames", "files"]
