"""The embedded default: a database on the embedded server, seeded once with the demo dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from customer_assets.sources.demo_profiles import seed_crm_table, write_event_files
from customer_assets.sources.demo_seed import SeedConfig, is_seeded, seed_database

log = logging.getLogger(__name__)

_SEED_LOCK = 7_411_202  # advisory lock id: only one process seeds, the others wait for it


def ensure_demo_database(server_dsn: str, dbname: str, events_dir: Path | None = None) -> str:
    """Create ``dbname`` on the server if missing and seed it once (tables, CRM table, event files)."""
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_SEED_LOCK,))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            dsn = make_dsn(server_dsn, dbname=dbname)
            if not is_seeded(dsn):
                log.info("seeding the embedded source database %r with the demo dataset", dbname)
                seed_database(dsn, SeedConfig())
                seed_crm_table(dsn)
            if events_dir is not None and not events_dir.exists():
                log.info("writing the demo event files to %s", events_dir)
                write_event_files(dsn, events_dir)
            cur.execute("SELECT pg_advisory_unlock(%s)", (_SEED_LOCK,))
    finally:
        admin.close()
    return dsn
