"""The CRM: its REST API, or none (the embedded demo's, a table of its database, is
``demo.sources.DemoCrmSource``)."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
from pydantic import Field

from customer_assets.resources.postgres import PostgresSource
from customer_assets.sources.crm_api import (
    CrmApiClient,
    CrmAuthError,
    CrmExtract,
    CrmUnavailableError,
)


class CrmSource(dg.ConfigurableResource):
    """Customers updated in a week, with their CRM attributes (hashed later, with the PII key)."""

    api_url: str | None = Field(default=None, description="CRM_API_URL; unset: no CRM.")
    api_key: str | None = Field(default=None, description="CRM_API_KEY (bearer token).")
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
        """``api`` or ``none`` (no CRM configured: profiles come from the other sources); the demo's
        subclass is ``demo_table``."""
        return "api" if self.api_url else "none"

    def fetch_week(self, start: datetime, end: datetime, source_db: PostgresSource) -> CrmExtract:
        if self.kind == "none":
            return CrmExtract()
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
