"""Helpers of the tests: seeded source databases on the session's PostgreSQL server, queries,
constants."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import psycopg2
from psycopg2 import sql

from customer_assets.demo.crm_and_events import seed_crm_table, write_event_files
from customer_assets.demo.seed import SeedConfig, seed_database

SMALL = SeedConfig(customers=600, products=60, weeks=3, transactions_per_week=1200, bots_per_week=1)

# The landing zone of each seeded source that has one, by database name.
EVENTS: dict[str, Path] = {}
BIGQUERY_PROJECT = "test-project"


def socket_dir(server) -> str:
    query = urllib.parse.urlparse(server.get_uri("postgres")).query
    return urllib.parse.parse_qs(query)["host"][0]


def create_source(
    server, name: str, config: SeedConfig | None = None, events_dir: Path | None = None
) -> str:
    """Create database ``name`` on the server, seed it (unless config is None) and return its DSN.

    With ``events_dir``, the CRM table and the landing zone of event files are made from the seed
    too.
    """
    admin = psycopg2.connect(server.get_uri("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    dsn = server.get_uri(name)
    if config is not None:
        seed_database(dsn, config)
        seed_crm_table(dsn)
        if events_dir is not None:
            write_event_files(dsn, events_dir)
    return dsn


def create_sql_ascii_source(server, name: str, crm_table: bool = True) -> str:
    """Database ``name`` in ``SQL_ASCII`` (the server stores any bytes, as many legacy ones do),
    seeded with the small source (and its CRM table); its DSN."""
    admin = psycopg2.connect(server.get_uri("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
                "LC_CTYPE 'C'"
            ).format(sql.Identifier(name))
        )
    admin.close()
    dsn = server.get_uri(name)
    seed_database(dsn, SMALL)
    if crm_table:
        seed_crm_table(dsn)
    return dsn


def crm_records(dsn: str) -> list[dict]:
    """The seeded CRM table as the CRM API's JSON records (ISO 8601 dates, numbers as numbers)."""
    return [
        row[0]
        for row in query(dsn, "SELECT row_to_json(c) FROM crm_customers c ORDER BY customer_id")
    ]


# The demo's tables, reshaped as a plain OLTP schema: integer ids, `timestamp without time zone` in
# New York wall time, no CRM table and none of the demo's bookkeeping.
PLAIN_SCHEMA = """
DROP TABLE crm_customers, demo_seed_info;
CREATE TABLE ids AS SELECT id AS old, row_number() OVER (ORDER BY id) AS new
  FROM (SELECT customer_id AS id FROM customers UNION SELECT customer_id FROM transactions) x WHERE id IS NOT NULL;
ALTER TABLE customers ADD COLUMN cid bigint;
UPDATE customers c SET cid = ids.new FROM ids WHERE ids.old = c.customer_id;
ALTER TABLE customers DROP COLUMN customer_id CASCADE;
ALTER TABLE customers RENAME COLUMN cid TO customer_id;
ALTER TABLE transactions ADD COLUMN cid bigint;
UPDATE transactions t SET cid = ids.new FROM ids WHERE ids.old = t.customer_id;
ALTER TABLE transactions DROP COLUMN customer_id;
ALTER TABLE transactions RENAME COLUMN cid TO customer_id;
ALTER TABLE transactions ALTER COLUMN "timestamp" TYPE timestamp USING "timestamp" AT TIME ZONE 'America/New_York';
ALTER TABLE customers ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'America/New_York';
SELECT 1
"""


def query(dsn: str, statement: str, params=None) -> list[tuple]:
    """The rows of ``statement`` (none for a statement that returns none), committed."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description is not None else []
    conn.close()
    return rows
