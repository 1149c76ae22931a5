"""Seed a PostgreSQL "production" source database with a deterministic synthetic dataset.

Used as the demo default source, by tests and by benchmarks. :func:`seed_database` drops and
recreates ``customers``, ``products``, ``transactions``, ``demo_seed_dirty_rows`` and
``demo_seed_info`` in one transaction, generating and COPY-loading transactions week by week
(the next week is generated in a background thread while the current one loads), so memory stays
bounded at large scale. The same :class:`SeedConfig` always produces identical table contents
(only ``demo_seed_info.seeded_at`` differs).

Every intentionally dirty *completed* transaction is listed in ``demo_seed_dirty_rows`` with the
reason code the pipeline is expected to assign; each has exactly one defect. ``customers.email``,
``phone`` and ``address`` are synthetic PII (``yuki.tanaka123@example.com``, ``+1-555-0100123``,
``42 Oak Street, Springfield``) that the pipeline must never extract.

The rows come from ``seed_rows.py``; this module writes them.

CLI: ``python -m customer_assets.demo.seed --dsn postgresql://... [--customers N ...]``
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict
from datetime import date
from typing import Any, TypeVar

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv

from customer_assets.demo.seed_rows import SeedConfig, customer_table, population, seeded_weeks
from customer_assets.demo.seed_vocabulary import (
    DIRTY_KINDS,
    SEGMENT_P,
    SEGMENTS,
    UNKNOWN_CUSTOMER_BASE,
)

DDL = """
DROP TABLE IF EXISTS customers, products, transactions, demo_seed_dirty_rows, demo_seed_info;
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL,
  country TEXT, segment TEXT, email TEXT, phone TEXT, address TEXT);
CREATE TABLE products (product_id TEXT PRIMARY KEY, name TEXT, category TEXT, price NUMERIC(12,2));
CREATE TABLE transactions (transaction_id TEXT, customer_id TEXT, product_id TEXT,
  amount NUMERIC(18,4), currency TEXT, "timestamp" TIMESTAMPTZ, status TEXT);
CREATE TABLE demo_seed_dirty_rows (transaction_id TEXT, kind TEXT, expected_reason TEXT, week_start DATE);
CREATE TABLE demo_seed_info (seeded_at TIMESTAMPTZ, config JSONB, counts JSONB);
"""
CHUNK_ROWS = 200_000  # rows per COPY statement
T = TypeVar("T")


def _prefetch(items: Iterator[T]) -> Iterator[T]:
    """Compute the next item in a background thread while the caller handles the current one."""
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(next, items, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(next, items, None)
            yield item


def _copy(cur: Any, table: str, data: pa.Table) -> None:
    """COPY ``data`` into ``table`` as CSV, CHUNK_ROWS rows per statement."""
    columns = ", ".join(f'"{c}"' for c in data.column_names)
    sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, FREEZE)"
    for off in range(0, data.num_rows, CHUNK_ROWS):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(data.slice(off, CHUNK_ROWS), sink, pacsv.WriteOptions(include_header=False))
        cur.copy_expert(sql, io.BytesIO(sink.getvalue()), size=1 << 20)


def seed_database(dsn: str, config: SeedConfig = SeedConfig()) -> dict[str, Any]:
    """Drop, recreate and fill the demo source tables in one transaction; return a counts summary.

    The summary (also stored in ``demo_seed_info.counts``) has ``tables`` (rows per table),
    ``dirty_rows`` (per kind) and ``weeks`` (per week: row counts, dirty rows per kind and the
    bot customers with their completed-transaction counts).
    """
    rng = np.random.default_rng(config.random_seed)
    pop, customers, products = population(rng, config)
    weeks: list[dict[str, Any]] = []
    specials: list[tuple[np.ndarray, np.ndarray]] = []
    n_tx = n_dirty = 0
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_advisory_xact_lock(74318921); SET LOCAL timezone = 'UTC';"
            "SET LOCAL synchronous_commit = off; SET LOCAL maintenance_work_mem = '256MB';"
        )
        cur.execute(DDL)
        _copy(cur, "customers", customers)
        _copy(cur, "products", products)
        for tx, dirty, special, stats in _prefetch(seeded_weeks(rng, config, pop)):
            _copy(cur, "transactions", tx)
            _copy(cur, "demo_seed_dirty_rows", dirty)
            n_tx, n_dirty = n_tx + tx.num_rows, n_dirty + dirty.num_rows
            specials.append(special)
            weeks.append(stats)
        sp_created, sp_country = (np.concatenate(a) for a in zip(*specials, strict=True))
        n_cust = config.customers + len(sp_created)
        if n_cust >= UNKNOWN_CUSTOMER_BASE:
            raise ValueError("too many customers: ids would collide with unknown-customer ids")
        if len(sp_created):
            sp_segment = rng.choice(len(SEGMENTS), len(sp_created), p=SEGMENT_P)
            extra = customer_table(rng, config.customers + 1, sp_created, sp_country, sp_segment)
            _copy(cur, "customers", extra)
        cur.execute(
            'CREATE INDEX ON transactions ("timestamp");'
            'CREATE INDEX ON transactions (customer_id, "timestamp");'
        )
        summary = {
            "tables": {
                "customers": n_cust,
                "products": config.products,
                "transactions": n_tx,
                "demo_seed_dirty_rows": n_dirty,
            },
            "dirty_rows": {k: sum(w["dirty_by_kind"][k] for w in weeks) for k in DIRTY_KINDS},
            "weeks": weeks,
        }
        config_json = {**asdict(config), "end_week": config.end_week.isoformat()}
        cur.execute(
            "INSERT INTO demo_seed_info VALUES (now(), %s, %s)",
            (json.dumps(config_json), json.dumps(summary)),
        )
        cur.execute(
            "ANALYZE customers, products, transactions, demo_seed_dirty_rows, demo_seed_info"
        )
    return summary


def is_seeded(dsn: str) -> bool:
    """True when ``demo_seed_info`` exists and holds a row (i.e. a seed completed)."""
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('demo_seed_info') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute("SELECT EXISTS (SELECT 1 FROM demo_seed_info)")
        return bool(cur.fetchone()[0])


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: seed the database at ``--dsn`` and print the summary as JSON."""
    d = SeedConfig()
    p = argparse.ArgumentParser(description="Seed a PostgreSQL demo source database.")
    p.add_argument(
        "--dsn", required=True, help="libpq URI: postgresql://postgres:@/postgres?host=/tmp/x"
    )
    p.add_argument("--customers", type=int, default=d.customers)
    p.add_argument("--products", type=int, default=d.products)
    p.add_argument("--weeks", type=int, default=d.weeks)
    p.add_argument("--transactions-per-week", type=int, default=d.transactions_per_week)
    p.add_argument(
        "--end-week", type=date.fromisoformat, default=d.end_week, help="YYYY-MM-DD, a Monday"
    )
    p.add_argument("--dirty-fraction", type=float, default=d.dirty_fraction)
    p.add_argument("--bots-per-week", type=int, default=d.bots_per_week)
    p.add_argument("--seed", type=int, default=d.random_seed)
    a = p.parse_args(argv)
    cfg = SeedConfig(
        a.customers,
        a.products,
        a.weeks,
        a.transactions_per_week,
        a.end_week,
        a.dirty_fraction,
        a.bots_per_week,
        a.seed,
    )
    print(json.dumps(seed_database(a.dsn, cfg), indent=2))


if __name__ == "__main__":
    main()
