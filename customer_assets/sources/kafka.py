"""Behavioural events straight from a Kafka topic, landed as the landing zone's day files.

The consumer starts at its group's committed offsets, reads every partition to its end (or until its time
budget runs out), and writes each message's event to ``<root>/dt=<event day>/<topic>+<partition>+<first
offset>-<last offset>.jsonl``: a file per day and partition, named by the offsets it holds, so writing the same
offsets again gives the same file. Files are written under ``<root>/.incoming``, fsynced, renamed into their
day folder (and the folder fsynced); only then are the offsets committed. A crash between the two leaves files
whose offsets the next run reads again: its files replace them (same offsets, same name; a wider range removes
the narrower file), and the week's reader drops repeated event ids anyway.

Values are JSON objects or, with ``KAFKA_AVRO_SCHEMA``, Avro records of that schema (plain binary, or with
the schema registry's 5-byte header). A value that does not deserialize is counted and skipped; what is kept
of it is where it was (partition, offset) and the kind of error, never its content.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import dagster as dg
from pydantic import Field

log = logging.getLogger(__name__)

MAX_EXAMPLES = 10  # values that did not deserialize, shown in the run log and the metadata
INCOMING = ".incoming"  # not a dt= folder: the week's reader and the landing-zone sensor never see it
# Which KAFKA_* variables are client settings: the security ones, passed through (KAFKA_SASL_PASSWORD ->
# sasl.password). Others (KAFKA_HOME, KAFKA_OPTS of a Kafka installation) are not the pipeline's.
SECURITY_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")


class KafkaUnavailable(Exception):
    """The brokers did not answer within the bound, or refused the consumer: one line, no retry."""


def client_setting(variable: str) -> str:
    """``KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``."""
    return variable.removeprefix("KAFKA_").lower().replace("_", ".")


# --- deserialization -----------------------------------------------------------------------------------------

class Undecodable(Exception):
    """A value that is not an event object; the message is the error's kind, never the value's text."""


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
    """Avro's logical types as JSON: times as ISO 8601, dates as ISO dates, decimals and bytes as text."""
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
            raise ValueError(f"KAFKA_AVRO_SCHEMA={schema_path} is not a readable Avro schema file "
                             f"({type(exc).__name__})") from None
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
        for data in (value, value[5:] if value[:1] == b"\x00" else None):  # plain, then the registry's framing
            if data is None:
                continue
            try:
                record = self._record(data)
            except Exception:  # fastavro raises many kinds on bytes of another schema
                continue
            if isinstance(record, dict):
                return _plain(record)
        raise Undecodable("not an Avro record of KAFKA_AVRO_SCHEMA")


# --- which day an event belongs to ---------------------------------------------------------------------------

def event_day(event: dict, record_ms: int | None) -> str:
    """The UTC day of the event's own ``timestamp`` (what the week's reader filters on), else of the record's
    Kafka timestamp: the landing zone is partitioned by event time, like a sink connector's field partitioner."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
            return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc) \
                .date().isoformat()
        except ValueError:
            pass
    if record_ms and record_ms > 0:
        return datetime.fromtimestamp(record_ms / 1000, timezone.utc).date().isoformat()
    return datetime.now(timezone.utc).date().isoformat()


# --- what a landing did --------------------------------------------------------------------------------------

@dataclass
class PartitionProgress:
    committed_before: int | None = None  # the group's offset when the run started (None: none committed)
    first: int | None = None
    last: int | None = None
    last_timestamp_ms: int | None = None
    reached_end: bool = False
    lost_to_retention: int = 0  # offsets between the committed one and the first still in the log

    def as_dict(self) -> dict:
        return {"committed_before": self.committed_before, "first": self.first, "last": self.last,
                "reached_end": self.reached_end, "lost_to_retention": self.lost_to_retention}


@dataclass
class Landing:
    """What one run of the consumer read, wrote and committed."""

    topic: str
    topic_exists: bool = True
    messages: int = 0
    written: int = 0
    undecodable: int = 0
    examples: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    days: dict[str, int] = field(default_factory=dict)
    partitions: dict[int, PartitionProgress] = field(default_factory=dict)
    committed: bool = False
    seconds: float = 0.0

    @property
    def lost_to_retention(self) -> int:
        return sum(p.lost_to_retention for p in self.partitions.values())

    def lag_days(self, week_end: datetime) -> float:
        """How far behind the week's end the consumer still is, in days: 0 when every partition was read to
        its end (or past the week's end); from the last record read in a partition that was not; infinite
        for a partition of which nothing could be read in time."""
        end_ms = week_end.timestamp() * 1000
        lag = 0.0
        for progress in self.partitions.values():
            if progress.reached_end:
                continue
            if progress.last_timestamp_ms is None:
                return math.inf
            lag = max(lag, (end_ms - progress.last_timestamp_ms) / 86_400_000)
        return max(lag, 0.0)

    def summary(self) -> dict:
        return {"topic": self.topic, "topic_exists": self.topic_exists, "messages": self.messages,
                "written": self.written, "undecodable": self.undecodable, "undecodable_examples": self.examples,
                "files": len(self.files), "replaced_files": len(self.replaced), "days": self.days,
                "partitions": {str(p): v.as_dict() for p, v in sorted(self.partitions.items())},
                "lost_to_retention": self.lost_to_retention, "committed": self.committed,
                "seconds": round(self.seconds, 2)}


# --- durable files -------------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_pattern(topic: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(topic)}\+(\d+)\+(\d+)-(\d+)\.jsonl$")


class _DayFile:
    """One day's events of one partition, written to ``.incoming`` until ``publish``."""

    def __init__(self, root: Path, day: str):
        self.day = day
        self.temp = root / INCOMING / f"{uuid.uuid4().hex}.jsonl"
        self.handle = self.temp.open("wb")
        self.first: int | None = None
        self.last: int | None = None
        self.lines = 0

    def write(self, offset: int, line: bytes) -> None:
        self.first = offset if self.first is None else self.first
        self.last = offset
        self.handle.write(line + b"\n")
        self.lines += 1

    def publish(self, root: Path, topic: str, partition: int) -> Path:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        folder = root / f"dt={self.day}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{topic}+{partition}+{self.first:010d}-{self.last:010d}.jsonl"
        os.replace(self.temp, final)
        return final

    def discard(self) -> None:
        self.handle.close()
        self.temp.unlink(missing_ok=True)


def _replaced_files(root: Path, topic: str, ranges: dict[int, tuple[int, int]], keep: set[Path]) -> list[Path]:
    """Files of earlier, uncommitted attempts: same topic and partition, offsets within what this run read."""
    pattern = file_pattern(topic)
    found = []
    for path in root.glob(f"dt=*/{topic}+*"):
        match = pattern.match(path.name)
        if not match or path in keep:
            continue
        partition, first, last = (int(g) for g in match.groups())
        if partition in ranges and ranges[partition][0] <= first and last <= ranges[partition][1]:
            found.append(path)
    return found


def _sweep_incoming(root: Path, older_than_seconds: float = 86_400) -> None:
    """Temporary files of a run that died before publishing them (none younger than a day: a run may be
    writing them)."""
    now = time.time()
    for path in (root / INCOMING).glob("*.jsonl"):
        try:
            if now - path.stat().st_mtime > older_than_seconds:
                path.unlink()
        except FileNotFoundError:
            pass


def week_event_lines(root: Path, topic: str, start: datetime, end: datetime) -> int:
    """Lines the topic's files hold in the week's day folders (what the week has from Kafka, any run)."""
    pattern = file_pattern(topic)
    total = 0
    day = start.date()
    while day < end.date() or (day == end.date() and end.time() != datetime.min.time()):
        folder = root / f"dt={day.isoformat()}"
        if folder.is_dir():
            for path in folder.iterdir():
                if pattern.match(path.name):
                    with path.open("rb") as handle:
                        total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        day = date.fromordinal(day.toordinal() + 1)
    return total


# --- the consumer --------------------------------------------------------------------------------------------

def _commit(consumer, offsets: list) -> None:
    """Commit synchronously; a separate function so a test can fail the step at exactly this point."""
    consumer.commit(offsets=offsets, asynchronous=False)


class KafkaSource(dg.ConfigurableResource):
    """The Kafka topic of behavioural events (``KAFKA_BROKERS``), landed into the events landing zone.

    Security settings (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``) reach the client as
    ``security.protocol``, ``sasl.*``, ``ssl.*``; their values are read when the client is made and never
    stored in the resource's config or logged.
    """

    brokers: Optional[str] = Field(default=None, description="Bootstrap servers (KAFKA_BROKERS); unset: no Kafka.")
    topic: str = Field(default="customer-events", description="The events topic (KAFKA_TOPIC).")
    group_id: str = Field(default="customer-assets", description="Consumer group whose offsets are committed "
                          "once the files are safe (KAFKA_GROUP_ID).")
    avro_schema: Optional[str] = Field(default=None, description="Avro schema file of the values "
                                       "(KAFKA_AVRO_SCHEMA); unset: JSON values.")
    max_lag_days: float = Field(default=3.0, description="Consumer lag at the week's end, in days, above which "
                                "the week is partial (KAFKA_MAX_LAG_DAYS).")
    timeout_seconds: float = Field(default=30.0, description="How long the brokers may take to answer before the "
                                   "step fails (KAFKA_TIMEOUT_SECONDS).")
    consume_seconds: float = Field(default=1800.0, description="Time budget of one landing; what is left waits "
                                   "for the next run (KAFKA_CONSUME_SECONDS).")
    security_settings: dict[str, str] = Field(default_factory=dict, description="Client setting -> name of the "
                                              "environment variable holding its value (values never in config).")

    @property
    def configured(self) -> bool:
        return bool(self.brokers)

    def _secrets(self) -> dict[str, str]:
        return {setting: dg.EnvVar(name).get_value() or "" for setting, name in self.security_settings.items()}

    def client_config(self) -> dict:
        ms = int(self.timeout_seconds * 1000)
        return {"bootstrap.servers": self.brokers, "group.id": self.group_id, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "enable.partition.eof": True,
                "socket.connection.setup.timeout.ms": max(ms, 1000), "socket.timeout.ms": max(ms, 10),
                "log_level": 0, "logger": logging.getLogger("customer_assets.kafka.client"),
                **self._secrets()}

    def _one_line(self, what: str, exc: BaseException) -> KafkaUnavailable:
        text = str(exc)
        for secret in self._secrets().values():
            if secret:
                text = text.replace(secret, "***")
        return KafkaUnavailable(f"Kafka unavailable: {what} at {self.brokers} (topic {self.topic}, group "
                                f"{self.group_id}) within {self.timeout_seconds:g}s: {text.splitlines()[0][:300]}")

    def decoder(self) -> Callable[[bytes | None], dict]:
        return AvroDecoder(self.avro_schema) if self.avro_schema else decode_json

    def backlog(self) -> dict[int, int]:
        """Per partition, messages past the group's committed offset (the sensor's question), or raises
        ``KafkaUnavailable``."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(self.client_config())
        try:
            topics = consumer.list_topics(self.topic, timeout=self.timeout_seconds).topics
            meta = topics.get(self.topic)
            if meta is None or meta.error is not None:
                return {}
            tps = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
            committed = consumer.committed(tps, timeout=self.timeout_seconds)
            waiting = {}
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition),
                                                           timeout=self.timeout_seconds, cached=False)
                waiting[tp.partition] = max(high - max(tp.offset, low), 0)
            return waiting
        except KafkaException as exc:
            raise self._one_line("no answer from the brokers", exc) from None
        finally:
            consumer.close()

    def land(self, root: Path, log: logging.Logger = log, max_messages: int | None = None) -> Landing:
        """Consume from the group's committed offsets to the end of every partition (or the time budget, or
        ``max_messages``), write the day files durably, then commit. Raises ``KafkaUnavailable``."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

        started = time.monotonic()
        decode = self.decoder()
        landing = Landing(self.topic)
        (root / INCOMING).mkdir(parents=True, exist_ok=True)
        _sweep_incoming(root)
        consumer = Consumer(self.client_config())
        files: dict[tuple[str, int], _DayFile] = {}
        try:
            try:
                topics = consumer.list_topics(self.topic, timeout=self.timeout_seconds).topics
                meta = topics.get(self.topic)
                if meta is None or meta.error is not None:
                    landing.topic_exists = False
                    return landing
                tps = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
                committed = consumer.committed(tps, timeout=self.timeout_seconds)
            except KafkaException as exc:
                raise self._one_line("no answer from the brokers", exc) from None
            for tp in committed:
                landing.partitions[tp.partition] = PartitionProgress(
                    committed_before=tp.offset if tp.offset >= 0 else None)
            consumer.assign([TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else
                                            OFFSET_BEGINNING) for tp in committed])
            deadline = started + self.consume_seconds
            quiet_since = time.monotonic()
            while not all(p.reached_end for p in landing.partitions.values()):
                if time.monotonic() > deadline or (max_messages is not None and landing.messages >= max_messages):
                    break
                batch = consumer.consume(num_messages=1000, timeout=1.0)
                if batch:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > self.timeout_seconds:
                    raise KafkaUnavailable(f"Kafka unavailable: the brokers at {self.brokers} sent nothing for "
                                           f"{self.timeout_seconds:g}s while partitions of {self.topic} were "
                                           "not read to their end")
                for message in batch:
                    progress = landing.partitions.setdefault(message.partition(), PartitionProgress())
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            progress.reached_end = True
                            continue
                        if error.fatal() or error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                                             KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                             KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                             KafkaError._AUTHENTICATION):
                            raise self._one_line("the consumer failed", KafkaException(error))
                        continue
                    self._take(message, progress, landing, decode, files, root, log)
                    if max_messages is not None and landing.messages >= max_messages:
                        break
            ranges = {p: (v.first, v.last) for p, v in landing.partitions.items() if v.first is not None}
            self._publish(root, files, landing)
            self._remove_replaced(root, ranges, landing)
            offsets = [TopicPartition(self.topic, p, last + 1) for p, (_, last) in sorted(ranges.items())]
            if offsets:
                try:
                    _commit(consumer, offsets)
                except KafkaException as exc:
                    raise self._one_line("the offsets could not be committed (the files are safe; the next "
                                         "run rewrites the same files)", exc) from None
            landing.committed = True
        finally:
            for day_file in files.values():
                if not day_file.handle.closed:
                    day_file.discard()
            consumer.close()
            landing.seconds = time.monotonic() - started
        return landing

    def _take(self, message, progress: PartitionProgress, landing: Landing, decode, files, root: Path,
              log: logging.Logger) -> None:
        offset, partition = message.offset(), message.partition()
        if progress.first is None and progress.committed_before is not None and offset > progress.committed_before:
            progress.lost_to_retention = offset - progress.committed_before
        progress.first = offset if progress.first is None else progress.first
        progress.last = offset
        progress.reached_end = False
        kind, stamp = message.timestamp()
        progress.last_timestamp_ms = stamp if kind and stamp > 0 else progress.last_timestamp_ms
        landing.messages += 1
        try:
            event = decode(message.value())
        except Undecodable as exc:
            landing.undecodable += 1
            if len(landing.examples) < MAX_EXAMPLES:
                example = {"partition": partition, "offset": offset, "error": str(exc)}
                landing.examples.append(example)
                log.warning(f"skipping a value that does not deserialize: partition {partition}, offset {offset} "
                            f"({exc})")
            return
        day = event_day(event, progress.last_timestamp_ms)
        day_file = files.get((day, partition))
        if day_file is None:
            day_file = files[(day, partition)] = _DayFile(root, day)
        day_file.write(offset, json.dumps(event, separators=(",", ":")).encode())
        landing.written += 1
        landing.days[day] = landing.days.get(day, 0) + 1

    def _publish(self, root: Path, files: dict[tuple[str, int], _DayFile], landing: Landing) -> None:
        folders = set()
        for (_, partition), day_file in sorted(files.items()):
            final = day_file.publish(root, self.topic, partition)
            landing.files.append(str(final))
            folders.add(final.parent)
        for folder in sorted(folders):
            _fsync_dir(folder)
        if folders:
            _fsync_dir(root)

    def _remove_replaced(self, root: Path, ranges: dict[int, tuple[int, int]], landing: Landing) -> None:
        replaced = _replaced_files(root, self.topic, ranges, {Path(f) for f in landing.files})
        for path in replaced:
            path.unlink(missing_ok=True)
            landing.replaced.append(str(path))
        for folder in {p.parent for p in replaced}:
            _fsync_dir(folder)


def security_variables(environ: dict[str, str]) -> dict[str, str]:
    """Client setting -> variable name, for the set security variables among ``environ``'s names."""
    return {client_setting(name): name for name in sorted(environ)
            if name.startswith(SECURITY_PREFIXES) and environ[name]}
