"""The BigQuery client of the warehouse project, built in one place for the ``BigQueryWarehouse``
resource and the BigQuery warehouse IO manager, and the one conflict both retry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
# A mutating statement that lost a race with another on the same table (weeks loaded at once):
# BigQuery retries it a few times itself, then fails it with one of these; it changed nothing.
CONFLICTS = ("due to concurrent update", "could not serialize access")
CONFLICT_RETRIES = 5
CONFLICT_BASE_SECONDS = 2.0


def is_concurrent_update(exc: BaseException) -> bool:
    """True for BigQuery's "Could not serialize access to table ... due to concurrent update" (a
    DML statement) and "Transaction is aborted due to concurrent update" (a transaction): worth
    running again, since the statement changed nothing."""
    from google.api_core import exceptions as gexc

    if not isinstance(exc, gexc.GoogleAPICallError):
        return False
    text = " ".join(
        [
            str(exc.message),
            *(str(e.get("message", "")) for e in exc.errors or [] if isinstance(e, dict)),
        ]
    ).lower()
    return any(conflict in text for conflict in CONFLICTS)


def retrying_conflicts(
    run: Callable[[], T],
    log=None,
    retries: int = CONFLICT_RETRIES,
    base_seconds: float = CONFLICT_BASE_SECONDS,
) -> T:
    """``run()``, run again (with exponential backoff, at most ``retries`` times) while BigQuery
    fails it for a concurrent update of the same table."""
    for attempt in range(retries + 1):
        try:
            return run()
        except Exception as err:
            if not is_concurrent_update(err) or attempt == retries:
                raise
            delay = base_seconds * 2**attempt
            if log is not None:
                log.warning(f"BigQuery: {err}; running it again in {delay:.0f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def bigquery_client(project: str, location: str, emulator_host: str | None = None):
    """A client of the warehouse project: the emulator's anonymous one in tests, else the default
    chain of credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata
    server)."""
    from google.cloud import bigquery

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator_host},
        )
    return bigquery.Client(project=project, location=location)
