"""One measured approach per process, so that peak memory does not mix: ``python -m
benchmarks.probes KIND``.

KIND is ``floor`` (the extract query through ``COPY ... TO STDOUT``, discarded), ``naive``
(``pandas.read_sql`` through SQLAlchemy in 10,000-row chunks, concatenated, written to Parquet) or
``extract`` (this project's extract: the COPY stream parsed by pyarrow, each block checked and
written to the week's Parquet file); ``extract_version_serial`` and ``extract_versioned`` add the week's version to it, after and
alongside the COPY (issue 26). Prints one JSON object: seconds (after imports and connecting), rows,
peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import psycopg2

from customer_assets.settings import configure_runtime
from customer_assets.sources.extract import week_extract_sql
from customer_assets.sources.source_schema import SourceSchema
from customer_assets.weeks import week_bounds

NAIVE_CHUNKSIZE = 10_000

# The demo's shape (text ids, timestamptz): the extract's SQL as the reference probes (floor, naive)
# read it. Only the benchmarks use it: the pipeline reads the source's own schema.
DEMO_SCHEMA = SourceSchema(
    types=dict.fromkeys(
        (("transactions", "timestamp"), ("customers", "created_at")), "timestamp with time zone"
    )
)
WEEK_EXTRACT_SQL = week_extract_sql(DEMO_SCHEMA)


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field in MB. ``VmHWM`` is this process image's own peak RSS:
    ``getrusage``'s ``ru_maxrss`` survives ``exec`` and so starts at the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def _connect(dsn: str):
    conn = psycopg2.connect(dsn)
    conn.set_session(readonly=True)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    return conn


def floor(dsn: str, start: datetime, end: datetime, out: Path) -> int:
    """The database's own cost of producing the week: COPY of the extract query, bytes thrown
    away."""
    with closing(_connect(dsn)) as conn, conn.cursor() as cur, open(os.devnull, "wb") as sink:
        query = cur.mogrify(WEEK_EXTRACT_SQL, {"start": start, "end": end}).decode()
        cur.copy_expert(
            f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", sink, size=1 << 20
        )
        return cur.rowcount


def naive(dsn: str, start: datetime, end: datetime, out: Path) -> int:
    """What a hand-run workflow does: read_sql in chunks through SQLAlchemy, concat, to_parquet."""
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: _connect(dsn))
    with engine.connect() as con:
        chunks = pd.read_sql(
            WEEK_EXTRACT_SQL, con, params={"start": start, "end": end}, chunksize=NAIVE_CHUNKSIZE
        )
        df = pd.concat(list(chunks), ignore_index=True)
    df.to_parquet(out / "naive.parquet", index=False)
    engine.dispose()
    return len(df)


def extract(dsn: str, start: datetime, end: datetime, out: Path) -> int:
    """This project's extract alone, as ``etl/raw_transactions`` reads the week: ``stream_week``
    into the week's Parquet file, each block checked as it is written (no version, no Dagster)."""
    from customer_assets.dagster_types import check_raw_batch
    from customer_assets.frames import ParquetSink
    from customer_assets.sources.extract import stream_week

    sink = ParquetSink(out / "extract.parquet", check=check_raw_batch)
    with closing(_connect(dsn)) as conn:
        stream_week(conn, start, end, into=sink)
    rows = len(sink.close())
    sink.discard()
    return rows


def _source_db(dsn: str):
    """The pipeline's resource on the benchmark server: its connections are the extract's
    (REPEATABLE READ, read-only, UTC, the timeouts)."""
    import urllib.parse

    from customer_assets.resources.postgres import PostgresSource

    url = urllib.parse.urlparse(dsn)
    return PostgresSource(
        host=urllib.parse.parse_qs(url.query)["host"][0],
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.path.lstrip("/"),
    )


def extract_version_serial(dsn: str, start: datetime, end: datetime, out: Path) -> int:
    """The extract with its week's version as it was until issue 26: ``week_version``, then
    ``stream_week``, one connection, then ``to_raw_frame``."""
    from customer_assets.sources.extract import stream_week, to_raw_frame, week_version

    source_db = _source_db(dsn)
    with source_db.connect() as conn:
        schema = source_db.schema(conn)
        week_version(conn, start, end, schema)
        table = stream_week(conn, start, end, schema=schema)
    return len(to_raw_frame(table))


def extract_versioned(dsn: str, start: datetime, end: datetime, out: Path) -> int:
    """The extract with its week's version as ``etl/raw_transactions`` reads it: the version on a
    second connection importing the extract's snapshot, concurrently with the COPY
    (``stream_week_versioned``)."""
    from customer_assets.sources.extract import stream_week_versioned, to_raw_frame

    source_db = _source_db(dsn)
    with source_db.connect() as conn:
        schema = source_db.schema(conn)
        table, _ = stream_week_versioned(
            conn, start, end, lambda snapshot: source_db.connect_beside(conn, snapshot), schema
        )
    return len(to_raw_frame(table))


PROBES = {
    "floor": floor,
    "naive": naive,
    "extract": extract,
    "extract_version_serial": extract_version_serial,
    "extract_versioned": extract_versioned,
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=sorted(PROBES))
    p.add_argument("--dsn", required=True)
    p.add_argument("--week", required=True, help="partition key, e.g. 2026-11-16")
    p.add_argument("--out", type=Path, required=True, help="scratch dir (the naive Parquet file)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    configure_runtime()  # as the pipeline starts: every probe reads text as Arrow strings
    start, end = week_bounds(a.week)
    baseline = _status_mb("VmRSS")
    started = time.perf_counter()
    rows = PROBES[a.kind](a.dsn, start, end, a.out)
    seconds = time.perf_counter() - started
    peak = _peak_rss_mb()
    # The imports (Dagster among them) are in the baseline: growth is what the approach itself adds.
    json.dump(
        {
            "kind": a.kind,
            "seconds": seconds,
            "rows": rows,
            "peak_rss_mb": peak,
            "rss_after_imports_mb": baseline,
            "rss_growth_mb": peak - baseline,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
