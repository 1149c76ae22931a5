"""The ERP, an optional second customer source: its own PostgreSQL (``ERP_DB_*``), a schema of the
embedded database on the demo, or none."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import pandas as pd
import psycopg2
from pydantic import Field

from customer_assets.resources.postgres import PostgresSource
from customer_assets.sources.erp import EMPTY, erp_table_exists, fetch_week

DEFAULT_COLUMNS = {
    "customer_id": "erp_id",
    "email": "email",
    "phone": "phone",
    "country": "country",
    "updated_at": "modified_at",
}


class ErpSource(dg.ConfigurableResource):
    """Customer records modified in a week. ``kind``: ``database`` (ERP_DB_HOST), ``demo`` (a schema
    of the embedded database) or ``none`` (no ERP: identity resolution uses the CRM and the
    transaction database)."""

    host: str | None = Field(
        default=None, description="ERP_DB_HOST; unset: no ERP (or the demo's schema)."
    )
    port: int = Field(default=5432, description="ERP_DB_PORT.")
    dbname: str | None = Field(default=None, description="ERP_DB_NAME.")
    user: str | None = Field(default=None, description="ERP_DB_USER.")
    password: str | None = Field(default=None, description="ERP_DB_PASSWORD.")
    schema_name: str = Field(
        default="erp", description="ERP_DB_SCHEMA: the schema of the customer table."
    )
    table: str = Field(default="customers", description="ERP_DB_TABLE: the customer table.")
    columns: str = Field(
        default=json.dumps(DEFAULT_COLUMNS),
        description="ERP_DB_COLUMNS: JSON map of the "
        "pipeline's names (customer_id, email, phone, country, updated_at) to the table's.",
    )
    demo: bool = Field(
        default=False, description="Embedded demo: the ERP schema lives in the source database."
    )
    connect_timeout: int = Field(default=30, description="Seconds to wait for a connection.")

    @property
    def kind(self) -> str:
        return "database" if self.host else "demo" if self.demo else "none"

    @contextmanager
    def _connect(self, source_db: PostgresSource):
        if self.kind == "demo":
            with source_db.connect() as conn:
                yield conn
            return
        try:
            conn = psycopg2.connect(
                host=self.host,
                port=self.port,
                dbname=self.dbname,
                user=self.user,
                password=self.password,
                connect_timeout=self.connect_timeout,
                application_name="customer_assets",
            )
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise dg.Failure(
                description=f"ERP database at {self.host}:{self.port}/{self.dbname} unreachable: {reason}. "
                "Check ERP_DB_HOST, ERP_DB_NAME, ERP_DB_USER and ERP_DB_PASSWORD (or unset ERP_DB_HOST "
                "to run without the ERP); the transaction branch is not affected."
            ) from exc
        try:
            conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            yield conn
        finally:
            conn.close()

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> pd.DataFrame:
        """The records modified in the week, or none without an ERP (or, on the demo, without its
        schema)."""
        if self.kind == "none":
            return EMPTY.copy()
        with self._connect(source_db) as conn:
            if self.kind == "demo" and not erp_table_exists(conn, self.schema_name, self.table):
                return EMPTY.copy()
            return fetch_week(
                conn,
                self.schema_name,
                self.table,
                {**DEFAULT_COLUMNS, **json.loads(self.columns)},
                start,
                end,
            )
