"""Alerts to a chat webhook: a run failure, a failed blocking check, a freshness miss, a figure out
of band, and the report of a week that succeeded (``week_succeeded``).

Set ``ALERT_WEBHOOK_URL`` (a Slack incoming webhook, or anything that accepts its JSON) and each
alert posts one short message: ``{"text": "...", "customer_assets": {kind, title, week, details}}``.
Slack shows the text and ignores the rest; another receiver can read the structured part. The URL is
a secret: it is read with ``EnvVar`` and never logged. Alerting never fails the pipeline: a webhook
that does not answer is a warning.
"""

from __future__ import annotations

import json
import logging
import urllib.request

import dagster as dg
from pydantic import Field

log = logging.getLogger(__name__)

ICONS = {
    "run_failed": ":x:",
    "check_failed": ":warning:",
    "freshness_missed": ":hourglass:",
    "out_of_band": ":chart_with_downwards_trend:",
    "week_succeeded": ":white_check_mark:",
}


class Alerts(dg.ConfigurableResource):
    """Where alerts go (ALERT_WEBHOOK_URL); unset: alerts are only logged."""

    webhook_url: str | None = Field(default=None, description="ALERT_WEBHOOK_URL (secret: EnvVar).")
    timeout_seconds: float = Field(default=5.0, description="Seconds to wait for the webhook.")
    webserver_url: str | None = Field(
        default=None,
        description="DAGSTER_WEBSERVER_URL: the UI's address, for links to a run in the messages.",
    )

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the Dagster UI, when the UI's address is known."""
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}" if self.webserver_url else None

    def send(
        self,
        kind: str,
        title: str,
        week: str | None = None,
        details: dict | None = None,
        logger=None,
    ) -> bool:
        """Post one alert; True when the webhook accepted it. Never raises."""
        logger = logger or log
        text = f"{ICONS.get(kind, ':bell:')} customer_assets: {title}" + (
            f" (week {week})" if week else ""
        )
        if not self.webhook_url:
            logger.info(f"alert (no ALERT_WEBHOOK_URL set): {text}")
            return False
        payload = {
            "text": text,
            "customer_assets": {
                "kind": kind,
                "title": title,
                "week": week,
                "details": details or {},
            },
        }
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return 200 <= response.status < 300
        except Exception as exc:
            logger.warning(f"alert not delivered ({type(exc).__name__}: {exc}): {text}")
            return False


def alert_failed_checks(
    alerts: Alerts, results: list[dg.AssetCheckResult], week: str | None, logger=None
) -> None:
    """One alert per failed check: ``check_failed`` for an ERROR (a blocking check's: it stopped the
    week's downstream assets), ``out_of_band`` for a WARN about a figure outside its usual band."""
    for result in results:
        if result.passed:
            continue
        kind = "check_failed" if result.severity == dg.AssetCheckSeverity.ERROR else "out_of_band"
        alerts.send(
            kind,
            f"check {result.check_name} on {result.asset_key.to_user_string()} failed",
            week,
            {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()},
            logger,
        )
