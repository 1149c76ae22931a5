"""The ERP, an optional second customer source: its own PostgreSQL (``ERP_DB_*``), or none (the
embedded demo's, a schema of its database, is ``demo.sources.DemoErpSource``)."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import pandas as pd
import psycopg2
from pydantic import Field

from customer_assets.errors import first_line
from customer_assets.resources.postgres import PostgresSource, SourceConnectionError
from customer_assets.sources.erp import EMPTY, fetch_week

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = {
    "customer_id": "erp_id",
    "email": "email",
    "phone": "phone",
    "country": "country",
    "updated_at": "modified_at",
}


class ErpSource(dg.ConfigurableResource):
    """Customer records modified in a week. ``kind``: ``database`` (ERP_DB_HOST) or ``none`` (no
    ERP: identity resolution uses the CRM and the transaction database). The embedded demo's ERP, a
    schema of its database, is a subclass in ``customer_assets/demo/sources.py``."""

    host: str | None = Field(default=None, description="ERP_DB_HOST; unset: no ERP.")
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
    connect_timeout: int = Field(default=30, description="Seconds to wait for a connection.")

    @property
    def kind(self) -> str:
        return "database" if self.host else "none"

    @contextmanager
    def _connect(self, source_db: PostgresSource):
        """A read-only connection in UTC to the ERP's server, set up as the source's is (one
        connection setup: ``PostgresSource.connect``); a refusal fails naming the ERP's variables."""
        server = PostgresSource(
            host=self.host,
            port=self.port,
            dbname=self.dbname or "",
            user=self.user,
            password=self.password,
            connect_timeout=self.connect_timeout,
        )
        try:
            conn = server.open(log)
        except (psycopg2.OperationalError, SourceConnectionError) as exc:
            # libpq's own words: the source's advice names the source's variables, not the ERP's
            cause = exc.__cause__ if isinstance(exc, SourceConnectionError) else exc
            reason = first_line(exc, str(cause))
            what = "refused the connection" if cause is not exc else "unreachable"
            raise dg.Failure(
                description=f"ERP database at {self.host}:{self.port}/{self.dbname} {what}: {reason}. "
                "Check ERP_DB_HOST, ERP_DB_NAME, ERP_DB_USER and ERP_DB_PASSWORD (or unset ERP_DB_HOST "
                "to run without the ERP); the transaction branch is not affected.",
                allow_retries=not isinstance(exc, SourceConnectionError),
            ) from exc
        with server.session(conn) as session:
            yield session

    def _read(self, conn, start: datetime, end: datetime) -> pd.DataFrame:
        return fetch_week(
            conn,
            self.schema_name,
            self.table,
            {**DEFAULT_COLUMNS, **json.loads(self.columns)},
            start,
            end,
        )

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> pd.DataFrame:
        """The records modified in the week, or none without an ERP."""
        if self.kind == "none":
            return EMPTY.copy()
        with self._connect(source_db) as conn:
            return self._read(conn, start, end)
