"""Peak memory of carrying the customer history one week, against the customers it holds:
``python -m benchmarks.history_memory --customers 1000000,3000000``.

For each size, a DuckDB warehouse holds the week before's partition (one row per customer and
currency); the week adds 200,000 customers' totals. Each way is measured in a fresh process:
- ``frames``: the partition read into pandas and carried there (``logic.history.carry``), as the
  step did before issue 26;
- ``files``: the partition streamed to a Parquet file and joined by DuckDB into another
  (``sql.history``), as the step does now.
Prints one line per measurement (seconds and peak RSS) and the ratio of the peaks between the
largest and the smallest size: memory that does not follow the customers gives about 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA, TABLE = "customer_analytics", "customer_history"
WEEK = datetime(2026, 11, 16, tzinfo=UTC)
WEEK_CUSTOMERS = 200_000


def seed(database: Path, customers: int) -> None:
    """The week before's partition: ``customers`` customers in USD, a fifth also in EUR."""
    import duckdb

    con = duckdb.connect(str(database))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    con.execute(
        f"""
        CREATE TABLE {SCHEMA}.{TABLE} AS
        SELECT 'C' || lpad(i::VARCHAR, 8, '0') AS customer_id, c.currency,
               (i % 100000) * 1000 + 1 AS amount_milli, 1 + i % 40 AS transaction_count,
               TIMESTAMPTZ '2024-01-01' + to_seconds(i % 50000000) AS first_purchase_at,
               TIMESTAMPTZ '2026-11-01' + to_seconds(i % 500000) AS last_purchase_at,
               CAST(NULL AS TIMESTAMPTZ) AS last_purchase_before_week,
               TIMESTAMP '2026-11-09' AS week_start
        FROM range({customers}) AS r(i), (VALUES ('USD'), ('EUR')) AS c(currency)
        WHERE c.currency = 'USD' OR i % 5 = 0
        """
    )
    con.close()


def week_totals() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    ids = rng.choice(WEEK_CUSTOMERS * 10, WEEK_CUSTOMERS, replace=False)
    start = pd.Timestamp(WEEK)
    return pd.DataFrame(
        {
            "customer_id": pd.Series([f"C{i:08d}" for i in ids], dtype="str"),
            "currency": "USD",
            "amount_milli": rng.integers(1_000, 500_000, WEEK_CUSTOMERS),
            "transaction_count": rng.integers(1, 5, WEEK_CUSTOMERS),
            "first_purchase_at": start
            + pd.to_timedelta(rng.integers(0, 86400, WEEK_CUSTOMERS), "s"),
            "last_purchase_at": start
            + pd.to_timedelta(rng.integers(86400, 604800, WEEK_CUSTOMERS), "s"),
        }
    )


def measure(way: str, database: Path, work: Path) -> dict:
    """One way, in this process: seconds and peak RSS."""
    from customer_assets.logic.history import carry
    from customer_assets.resources.warehouse_sql import DuckDBWarehouse
    from customer_assets.sql.history import (
        PREVIOUS_SQL,
        carry_to_file,
        previous_week_totals,
    )

    warehouse = DuckDBWarehouse(database=str(database))
    week = week_totals()
    started = time.monotonic()
    if way == "frames":
        before = warehouse.query(
            PREVIOUS_SQL,
            {"week_start": datetime(2026, 11, 9)},
            table=warehouse.table(SCHEMA, TABLE),
        )
        rows = len(carry(before, week, WEEK))
    else:
        before_file, out = work / "before.parquet", work / "carried.parquet"
        previous_week_totals(warehouse, [SCHEMA, TABLE], WEEK, before_file)
        rows = carry_to_file(before_file, week, WEEK, out)["rows"]
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"way": way, "rows": rows, "seconds": round(seconds, 2), "peak_rss_mb": round(peak)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="1000000,3000000")
    parser.add_argument(
        "--probe", nargs=3, metavar=("WAY", "DATABASE", "WORK"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.probe:
        way, database, work = args.probe
        print(json.dumps(measure(way, Path(database), Path(work))))
        return
    sizes = [int(n) for n in args.customers.split(",")]
    peaks: dict[str, dict[int, float]] = {"frames": {}, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for customers in sizes:
            database = Path(tmp, f"{customers}.duckdb")
            seed(database, customers)
            for way in ("frames", "files"):
                work = Path(tmp, f"{customers}-{way}")
                work.mkdir()
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.history_memory",
                        "--probe",
                        way,
                        str(database),
                        str(work),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                peaks[way][customers] = result["peak_rss_mb"]
                print(
                    f"{customers:>10,} customers  {way:6}  {result['rows']:>10,} rows  "
                    f"{result['seconds']:6.2f} s  peak RSS {result['peak_rss_mb']:>6,} MB",
                    flush=True,
                )
    small, large = sizes[0], sizes[-1]
    for way, by_size in peaks.items():
        print(
            f"{way}: peak at {large:,} / peak at {small:,} customers = "
            f"{by_size[large] / by_size[small]:.2f}"
        )


if __name__ == "__main__":
    main()
