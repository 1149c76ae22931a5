"""CRM customers updated in a week: from the CRM REST API, or from a table of the source database.

API contract (``GET {CRM_API_URL}/customers``, ``Authorization: Bearer {CRM_API_KEY}``): query
``updated_since``, ``updated_before`` (ISO 8601), ``offset``, ``limit``; answer
``{"data": [record, ...], "next_offset": int | null}``. A record has ``customer_id``, ``email``,
``phone``, ``signup_date``, ``last_activity_date``, ``subscription_tier``, ``lifetime_value``,
``support_ticket_count``, ``updated_at``.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import requests

from customer_assets.logic.crm_records import CRM_FIELDS

log = logging.getLogger(__name__)

CRM_TABLE_SQL = """
SELECT customer_id, email, phone, signup_date, last_activity_date, subscription_tier,
       lifetime_value::float8, support_ticket_count, updated_at
FROM {table} WHERE updated_at >= %(start)s AND updated_at < %(end)s
"""


class CrmAuthError(Exception):
    """401 from the CRM: the API key was refused."""


class CrmUnavailableError(Exception):
    """The CRM failed page after page, or ran out of its time budget: no point in asking it
    further."""


@dataclass
class CrmExtract:
    """What arrived from the CRM, and what did not: ``records`` from the API, or ``table`` (the same
    fields as text columns) from the source database's table."""

    records: list[dict] = field(default_factory=list)
    table: pd.DataFrame | None = None
    requests: int = 0
    retries: int = 0
    pages: int = 0
    missing_pages: list[dict] = field(default_factory=list)
    malformed_records: int = 0
    missing_fields: dict[str, int] = field(default_factory=dict)
    page_size_reductions: int = 0
    # values of the source table's records whose bytes were not UTF-8, kept with U+FFFD
    invalid_encoding_values: int = 0

    @property
    def partial(self) -> bool:
        return bool(self.missing_pages)

    def frame(self) -> pd.DataFrame:
        """The accepted records as a frame of ``CRM_FIELDS``."""
        return (
            self.table
            if self.table is not None
            else pd.DataFrame(self.records, columns=list(CRM_FIELDS))
        )

    def summary(self) -> dict:
        records = len(self.table) if self.table is not None else len(self.records)
        return {
            "records": records,
            "requests": self.requests,
            "retries": self.retries,
            "pages": self.pages,
            "partial": self.partial,
            "missing_pages": self.missing_pages,
            "malformed_records": self.malformed_records,
            "missing_fields": self.missing_fields,
            "page_size_reductions": self.page_size_reductions,
            "invalid_encoding_values": self.invalid_encoding_values,
        }


class SlidingWindowLimiter:
    """At most ``limit`` calls in any ``window`` seconds (client-side, before each request)."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limit, self.window, self.clock, self.sleep = limit, window, clock, sleep
        self.calls: collections.deque[float] = collections.deque()

    def acquire(self) -> None:
        now = self.clock()
        while self.calls and now - self.calls[0] >= self.window:
            self.calls.popleft()
        if len(self.calls) >= self.limit:
            self.sleep(self.window - (now - self.calls[0]))
            self.calls.popleft()
        self.calls.append(self.clock())


@dataclass
class CrmApiClient:
    """Fetches every page of a week's updated customers, within the API's limits and failure
    modes."""

    base_url: str
    api_key: str
    page_size: int = 500
    min_page_size: int = 50
    max_retries: int = 5
    timeout_seconds: float = 30.0
    backoff_seconds: float = 1.0
    requests_per_minute: int = 100
    max_failed_pages: int = 3
    time_budget_seconds: float = 600.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        )
        self.limiter = SlidingWindowLimiter(self.requests_per_minute, sleep=self.sleep)

    def _get(self, params: dict, extract: CrmExtract) -> requests.Response:
        self.limiter.acquire()
        extract.requests += 1
        return self.session.get(
            f"{self.base_url.rstrip('/')}/customers", params=params, timeout=self.timeout_seconds
        )

    def fetch_page(
        self, start: datetime, end: datetime, offset: int, limit: int, extract: CrmExtract
    ) -> tuple[list, int | None, int]:
        """One page, retried; returns (records, next offset, page size used). Raises when it gives
        up."""
        attempt = 0
        while True:
            params = {
                "updated_since": start.isoformat(),
                "updated_before": end.isoformat(),
                "offset": offset,
                "limit": limit,
            }
            try:
                response = self._get(params, extract)
            except requests.Timeout:
                if limit > self.min_page_size:
                    limit = max(self.min_page_size, limit // 2)
                    extract.page_size_reductions += 1
                    log.warning(
                        "CRM page at offset %d timed out; retrying with %d records a page",
                        offset,
                        limit,
                    )
                    continue
                error = f"timed out after {self.timeout_seconds}s with {limit} records a page"
            except requests.ConnectionError as exc:
                error = f"connection failed: {type(exc).__name__}"
            else:
                if response.status_code == 401:
                    raise CrmAuthError(
                        "the CRM refused the API key (401): credentials may have expired; "
                        "renew CRM_API_KEY"
                    )
                if response.status_code == 200:
                    body = response.json()
                    return body.get("data") or [], body.get("next_offset"), limit
                error = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    if self._waited_for_rate_limit(response, attempt, extract):
                        attempt += 1
                        continue
                elif response.status_code < 500:
                    raise RuntimeError(
                        f"CRM answered HTTP {response.status_code} at offset {offset}: "
                        f"{response.text[:200]}"
                    )
            if attempt >= self.max_retries:
                raise RuntimeError(error)
            attempt += 1
            extract.retries += 1
            self.sleep(self.backoff_seconds * 2 ** (attempt - 1))

    def _waited_for_rate_limit(
        self, response: requests.Response, attempt: int, extract: CrmExtract
    ) -> bool:
        """After a 429 at ``attempt``: waits as long as its ``Retry-After`` asks (never less than
        the backoff) and returns True, or returns False when the retries are used up."""
        retry_after = response.headers.get("Retry-After")
        delay = (
            float(retry_after)
            if retry_after and retry_after.replace(".", "", 1).isdigit()
            else self.backoff_seconds * 2**attempt
        )
        if attempt >= self.max_retries:
            return False
        extract.retries += 1
        log.warning(
            "CRM rate limit (429); waiting %.1fs (retry %d of %d)",
            delay,
            attempt + 1,
            self.max_retries,
        )
        self.sleep(max(delay, self.backoff_seconds * 2**attempt))
        return True

    def fetch_week(self, start: datetime, end: datetime) -> CrmExtract:
        """All pages of customers updated in [start, end); a page that fails for good is recorded,
        skipped."""
        extract = CrmExtract()
        offset: int | None = 0
        limit = self.page_size
        deadline, failed_in_a_row = self.clock() + self.time_budget_seconds, 0
        while offset is not None:
            if self.clock() > deadline:
                raise CrmUnavailableError(
                    f"the CRM at {self.base_url} did not deliver the week within its budget of "
                    f"{self.time_budget_seconds:.0f}s ({extract.pages} page(s) read, "
                    f"{len(extract.missing_pages)} lost)"
                )
            try:
                records, next_offset, limit = self.fetch_page(start, end, offset, limit, extract)
            except RuntimeError as exc:
                extract.missing_pages.append({"offset": offset, "limit": limit, "error": str(exc)})
                failed_in_a_row += 1
                if failed_in_a_row >= self.max_failed_pages:
                    raise CrmUnavailableError(
                        f"the CRM at {self.base_url} looks unavailable: {failed_in_a_row} "
                        "pages in a row failed after retries (offsets "
                        f"{[p['offset'] for p in extract.missing_pages[-failed_in_a_row:]]}), "
                        f"the last with: {exc}"
                    ) from exc
                log.warning("CRM page at offset %d lost: %s; continuing after it", offset, exc)
                offset += limit
                continue
            failed_in_a_row = 0
            extract.pages += 1
            accept_records(records, extract)
            if not records and next_offset is None:
                break
            offset = next_offset
        return extract


def accept_records(records: list, extract: CrmExtract) -> None:
    """Keep records that carry a customer id; count malformed ones and missing fields."""
    missing = collections.Counter()
    for record in records:
        if not isinstance(record, dict) or not str(record.get("customer_id") or "").strip():
            extract.malformed_records += 1
            continue
        row = {name: record.get(name) for name in CRM_FIELDS}
        missing.update(name for name, value in row.items() if value is None or value == "")
        extract.records.append(row)
    for name in CRM_FIELDS:  # in field order: the report lists fields as the CRM defines them
        if missing[name]:
            extract.missing_fields[name] = extract.missing_fields.get(name, 0) + missing[name]


# Every field as text, as the API's JSON carries it: the table's own types may differ from the
# demo's.
CRM_TABLE_SCHEMA = pa.schema([(name, pa.string()) for name in CRM_FIELDS])


def fetch_week_from_table(
    conn, start: datetime, end: datetime, table_name: str = "crm_customers"
) -> CrmExtract:
    """The embedded default: the same records from ``crm_customers`` in the source database, through
    ``COPY`` into Arrow (no Python object per value), kept and counted as ``accept_records`` keeps
    and counts records. A value that is not UTF-8 (a SQL_ASCII database stores any bytes) is kept
    with U+FFFD and counted in ``invalid_encoding_values``."""
    from psycopg2 import sql

    from customer_assets.sources.copy_stream import copy_query, take_marks

    query = CRM_TABLE_SQL.format(table=sql.Identifier(table_name).as_string(conn))
    table, replaced = take_marks(
        copy_query(conn, query, {"start": start, "end": end}, CRM_TABLE_SCHEMA)
    )
    extract = CrmExtract(invalid_encoding_values=replaced)
    extract.requests = extract.pages = 1
    ids = pc.utf8_trim_whitespace(table["customer_id"])
    has_id = pc.fill_null(pc.not_equal(ids, ""), False)
    extract.malformed_records = table.num_rows - (pc.sum(has_id).as_py() or 0)
    table = table.filter(has_id)
    for name in CRM_FIELDS:
        missing = pc.sum(pc.fill_null(pc.equal(table[name], ""), True)).as_py() or 0
        if missing:
            extract.missing_fields[name] = missing
    extract.table = table.to_pandas()
    return extract
