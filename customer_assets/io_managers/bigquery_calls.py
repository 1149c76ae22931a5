"""Calls to BigQuery that fail clearly: which errors are worth retrying, and one week's load run
within a time budget with bounded retries (exponential backoff; an exhausted quota waits). The
client itself is the resources' (``customer_assets.resources.bigquery_client``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dagster as dg
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from customer_assets.resources.bigquery_client import is_concurrent_update

T = TypeVar("T")

_TRANSIENT_REASONS = {"backendError", "rateLimitExceeded", "internalError"}
_QUOTA_REASONS = {"quotaExceeded"}
_TRANSIENT_EXCEPTIONS = (
    gexc.InternalServerError,
    gexc.ServiceUnavailable,
    gexc.BadGateway,
    gexc.TooManyRequests,
    gexc.GatewayTimeout,
)


class LoadTimeoutError(TimeoutError):
    """The whole load took longer than ``load_timeout_seconds``."""


def _reasons(exc: BaseException) -> set[str]:
    reasons = {e.get("reason") for e in (getattr(exc, "errors", None) or []) if isinstance(e, dict)}
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        reasons.add(reason)
    reasons.discard(None)
    return reasons  # type: ignore[return-value]


def is_quota(exc: BaseException) -> bool:
    return isinstance(exc, gexc.Forbidden) and bool(_reasons(exc) & _QUOTA_REASONS)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a server error, a rate limit, or a conflict with a concurrent update of the
    same table (weeks loaded at once)."""
    if isinstance(exc, _TRANSIENT_EXCEPTIONS) or is_concurrent_update(exc):
        return True
    return isinstance(exc, gexc.GoogleAPICallError) and bool(_reasons(exc) & _TRANSIENT_REASONS)


def is_auth(exc: BaseException) -> bool:
    if isinstance(
        exc, (gexc.Unauthorized, auth_exc.DefaultCredentialsError, auth_exc.RefreshError)
    ):
        return True
    return isinstance(exc, gexc.Forbidden) and not is_quota(exc) and not is_transient(exc)


@dataclass
class LoadBudget:
    """State of one load: the deadline, the jobs run and what the report should say."""

    deadline: float
    job_ids: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    retries: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)

    def remaining(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise LoadTimeoutError(f"BigQuery load exceeded its time budget before {step}")
        return left


@dataclass
class Caller:
    """Runs one API call or one job (submitted and awaited) of a load: bounded retries within its
    budget, a denied permission turned into a failure that names the account and the permission."""

    project: str
    client: object
    log: object
    budget: LoadBudget
    max_retries: int
    retry_base_seconds: float
    quota_wait_seconds: float
    load_timeout_seconds: float

    def __call__(self, step: str, permissions: tuple[str, ...], fn: Callable[[], T]) -> T:
        return self.call(step, permissions, fn)

    @staticmethod
    def principal(client) -> str:
        credentials = getattr(client, "_credentials", None)
        email = getattr(credentials, "service_account_email", None)
        if email:
            return f"service account {email}"
        if credentials is not None:
            return f"credentials {type(credentials).__name__} (no service account email)"
        return "unknown credentials"

    def auth_failure(
        self, err: BaseException, step: str, permissions: tuple[str, ...]
    ) -> dg.Failure:
        named = re.findall(r"(bigquery\.[a-zA-Z]+\.[a-zA-Z]+)", str(err))
        missing = ", ".join(dict.fromkeys(named or permissions))
        return dg.Failure(
            description=(
                f"BigQuery denied {step} in project {self.project} to {self.principal(self.client)}: "
                f"it needs {missing}. Grant the permission (e.g. roles/bigquery.dataEditor on the "
                f"dataset and roles/bigquery.jobUser on the project); retrying will not help. "
                f"[{type(err).__name__}: {str(err)[:300]}]"
            ),
            metadata={
                "missing_permissions": missing,
                "principal": self.principal(self.client),
                "step": step,
            },
            allow_retries=False,
        )

    def call(self, step: str, permissions: tuple[str, ...], fn: Callable[[], T]) -> T:
        """Run ``fn`` (one API call or one job, submitted and awaited) with bounded retries."""
        attempt = 0
        began = time.monotonic()
        while True:
            self.budget.remaining(step)
            try:
                result = fn()
                self.budget.step_seconds[step] = round(time.monotonic() - began, 3)
                return result
            except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as err:
                if is_auth(err):
                    raise self.auth_failure(err, step, permissions) from err
                quota = is_quota(err)
                if not (quota or is_transient(err)):
                    raise
                if attempt >= self.max_retries:
                    raise RuntimeError(
                        f"BigQuery {step} still failing after {self.max_retries} retries: {err}"
                    ) from err
                attempt += 1
                self.budget.retries += 1
                delay = (
                    self.quota_wait_seconds
                    if quota
                    else self.retry_base_seconds * 2 ** (attempt - 1)
                )
                if time.monotonic() + delay >= self.budget.deadline:
                    raise LoadTimeoutError(
                        f"BigQuery {step}: no time left in load_timeout_seconds={self.load_timeout_seconds} "
                        f"to wait {delay:.1f}s before retry {attempt}: {err}"
                    ) from err
                self.log.warning(
                    f"BigQuery {step}: {'quota exceeded' if quota else 'transient error'} ({err}); "
                    f"retry {attempt}/{self.max_retries} in {delay:.1f}s"
                )
                time.sleep(delay)
