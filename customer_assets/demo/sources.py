"""The embedded demo's CRM and ERP: tables of the demo database standing in for the CRM's API and the
ERP's own server. Subclasses, as the demo's PostgreSQL is (``embedded.py``), so the production
resources know nothing of the demo."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import pandas as pd
from pydantic import Field

from customer_assets.resources.crm import CrmSource
from customer_assets.resources.erp import ErpSource
from customer_assets.resources.postgres import PostgresSource
from customer_assets.sources.crm_api import CrmExtract, fetch_week_from_table
from customer_assets.sources.erp import EMPTY, erp_table_exists


class DemoCrmSource(CrmSource):
    """The CRM's records read from a table of the source database (the demo seed's
    ``crm_customers``; ``CRM_DEMO_TABLE`` names it in benchmarks on seeded data)."""

    demo_table: str = Field(default="crm_customers", description="The source table of CRM records.")

    @property
    def kind(self) -> str:
        return "demo_table"

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> CrmExtract:
        with source_db.connect() as conn:
            return fetch_week_from_table(conn, start, end, self.demo_table)


class DemoErpSource(ErpSource):
    """The ERP's records read from the ``erp`` schema of the embedded database; none when the demo
    was seeded without it."""

    @property
    def kind(self) -> str:
        return "demo"

    @contextmanager
    def _connect(self, source_db: PostgresSource):
        with source_db.connect() as conn:
            yield conn

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> pd.DataFrame:
        with self._connect(source_db) as conn:
            if not erp_table_exists(conn, self.schema_name, self.table):
                return EMPTY.copy()
            return self._read(conn, start, end)
