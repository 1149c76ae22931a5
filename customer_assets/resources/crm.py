"""The CRM: its REST API in production, a table of the source database on the embedded default."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
from pydantic import Field

from customer_assets.resources.postgres import PostgresSource
from customer_assets.sources.crm import (
    CrmApiClient,
    CrmAuthError,
    CrmExtract,
    CrmUnavailableError,
    fetch_week_from_table,
)


class CrmSource(dg.ConfigurableResource):
    """Customers updated in a week, with their CRM attributes; emails are hashed with
    ``hash_key``."""

    api_url: str | None = Field(
        default=None, description="CRM_API_URL; unset: no CRM (or the demo table)."
    )
    api_key: str | None = Field(default=None, description="CRM_API_KEY (bearer token).")
    hash_key: str = Field(description="PII_HASH_KEY: HMAC-SHA256 key for emails and phones.")
    demo_table: str | None = Field(
        default=None,
        description="Embedded demo only: a source table of CRM "
        "records standing in for the API (the demo seed's crm_customers).",
    )
    page_size: int = Field(default=500, description="Records asked for per page.")
    min_page_size: int = Field(default=50, description="Smallest page after timeouts.")
    requests_per_minute: int = Field(default=100, description="Client-side rate limit.")
    max_retries: int = Field(default=5, description="Retries of a page on 429 / 5xx / timeouts.")
    timeout_seconds: float = Field(default=30.0, description="Per request.")
    backoff_seconds: float = Field(default=1.0, description="Base of the exponential backoff.")
    max_failed_pages: int = Field(
        default=3,
        description="Pages in a row that fail after their retries before "
        "the CRM counts as unavailable and the step fails.",
    )
    time_budget_seconds: float = Field(
        default=600.0, description="The most a week's CRM extract may take."
    )

    @property
    def kind(self) -> str:
        """``api``, ``demo_table`` or ``none`` (no CRM configured: profiles come from the other
        sources)."""
        return "api" if self.api_url else "demo_table" if self.demo_table else "none"

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> CrmExtract:
        if self.kind == "none":
            return CrmExtract()
        if self.kind == "demo_table":
            with source_db.connect() as conn:
                return fetch_week_from_table(conn, start, end, self.demo_table)
        client = CrmApiClient(
            self.api_url,
            self.api_key or "",
            page_size=self.page_size,
            min_page_size=self.min_page_size,
            max_retries=self.max_retries,
            timeout_seconds=self.timeout_seconds,
            backoff_seconds=self.backoff_seconds,
            requests_per_minute=self.requests_per_minute,
            max_failed_pages=self.max_failed_pages,
            time_budget_seconds=self.time_budget_seconds,
        )
        try:
            return client.fetch_week(start, end)
        except CrmAuthError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        except CrmUnavailableError as exc:
            raise dg.Failure(
                description=f"CRM unavailable: {exc}. The week's profiles need it; the transaction "
                "branch is not affected. Check CRM_API_URL and the CRM's status, then re-run the week.",
                allow_retries=False,
            ) from exc
