"""What a Kafka message's value means: a JSON object or an Avro record deserialized into an event,
and the UTC day the event belongs to (its landing-zone folder). A value that does not deserialize
raises ``Undecodable`` naming the kind of error, never the value's content.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone
from pathlib import Path


class Undecodable(Exception):
    """A value that is not an event object; the message is the error's kind, never the value's
    text."""


def decode_json(value: bytes | None) -> dict:
    if value is None:
        raise Undecodable("null value (tombstone)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise Undecodable("not UTF-8") from None
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Undecodable(f"invalid JSON at column {exc.colno}") from None
    if not isinstance(event, dict):
        raise Undecodable("not a JSON object")
    return event


def _plain(value):
    """Avro's logical types as JSON: times as ISO 8601, dates as ISO dates, decimals and bytes as
    text."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)  # Decimal, UUID


class AvroDecoder:
    """Avro records of one schema file (``KAFKA_AVRO_SCHEMA``), read with fastavro."""

    def __init__(self, schema_path: str):
        import fastavro

        try:
            self._schema = fastavro.parse_schema(json.loads(Path(schema_path).read_text()))
        except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
            raise ValueError(
                f"KAFKA_AVRO_SCHEMA={schema_path} is not a readable Avro schema file "
                f"({type(exc).__name__})"
            ) from None
        self._read = fastavro.schemaless_reader

    def _record(self, data: bytes):
        buffer = io.BytesIO(data)
        record = self._read(buffer, self._schema)
        if buffer.tell() != len(data):
            raise ValueError("trailing bytes")
        return record

    def __call__(self, value: bytes | None) -> dict:
        if value is None:
            raise Undecodable("null value (tombstone)")
        # plain, then the registry's framing
        for data in (value, value[5:] if value[:1] == b"\x00" else None):
            if data is None:
                continue
            try:
                record = self._record(data)
            except Exception:  # fastavro raises many kinds on bytes of another schema
                continue
            if isinstance(record, dict):
                return _plain(record)
        raise Undecodable("not an Avro record of KAFKA_AVRO_SCHEMA")


# --- which day an event belongs to
# ---------------------------------------------------------------------------


def event_day(event: dict, record_ms: int | None) -> str:
    """The UTC day of the event's own ``timestamp`` (what the week's reader filters on), else of the
    record's Kafka timestamp: the landing zone is partitioned by event time, like a sink connector's
    field partitioner."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
            return (
                (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
                .astimezone(timezone.utc)
                .date()
                .isoformat()
            )
        except ValueError:
            pass
    if record_ms and record_ms > 0:
        return datetime.fromtimestamp(record_ms / 1000, timezone.utc).date().isoformat()
    return datetime.now(timezone.utc).date().isoformat()
