"""A CRM REST API on loopback that speaks the production contract, with scriptable failures.

``GET /customers?updated_since&updated_before&offset&limit`` with ``Authorization: Bearer <key>``
answers ``{"data": [...], "next_offset": n | null}``. Behaviours: 429 bursts with Retry-After, 401
for a wrong key, slow answers for big pages, a page that always fails, malformed records.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class CrmBehaviour:
    records: list = field(default_factory=list)
    api_key: str = "good-key"
    rate_limited_requests: int = 0  # the first N requests get 429
    retry_after: str | None = "0.01"
    slow_above_limit: int | None = None  # pages bigger than this answer after slow_seconds
    slow_seconds: float = 1.0
    failing_offsets: set = field(default_factory=set)  # these offsets always answer 500
    filter_by_updated: bool = (
        False  # answer only records with updated_since <= updated_at < updated_before
    )
    requests: list = field(default_factory=list)


def make_records(n: int) -> list[dict]:
    return [
        {
            "customer_id": f"C{i:07d}",
            "email": f"user{i}@example.com",
            "phone": f"+1 (555) 010-{i:04d}",
            "signup_date": "2025-01-15",
            "last_activity_date": "2026-11-18",
            "subscription_tier": "pro",
            "lifetime_value": 100.0 + i,
            "support_ticket_count": i % 3,
            "updated_at": "2026-11-17T10:00:00Z",
        }
        for i in range(1, n + 1)
    ]


class _Handler(BaseHTTPRequestHandler):
    behaviour: CrmBehaviour

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
        payload = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(payload)

    def do_GET(self):
        b = self.behaviour
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        b.requests.append({"path": url.path, **query, "at": time.monotonic()})
        if url.path != "/customers":
            return self._send(404, {"error": "not found"})
        if self.headers.get("Authorization") != f"Bearer {b.api_key}":
            return self._send(401, {"error": "invalid token"})
        if len(b.requests) <= b.rate_limited_requests:
            return self._send(
                429, {"error": "slow down"}, {"Retry-After": b.retry_after} if b.retry_after else {}
            )
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
        if b.slow_above_limit is not None and limit > b.slow_above_limit:
            time.sleep(b.slow_seconds)
        if offset in b.failing_offsets:
            return self._send(500, {"error": "backend error"})
        records = b.records
        if b.filter_by_updated and "updated_since" in query and "updated_before" in query:
            since, before = (
                datetime.fromisoformat(query[k]) for k in ("updated_since", "updated_before")
            )
            records = [
                r for r in records if since <= datetime.fromisoformat(r["updated_at"]) < before
            ]
        page = records[offset : offset + limit]
        next_offset = offset + limit if offset + limit < len(records) else None
        return self._send(200, {"data": page, "next_offset": next_offset})


class CrmServer:
    """Context manager: ``with CrmServer(behaviour) as url: ...``."""

    def __init__(self, behaviour: CrmBehaviour):
        handler = type("Handler", (_Handler,), {"behaviour": behaviour})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
