"""Behavioural events straight from a Kafka topic, landed as the landing zone's day files.

The consumer starts at its group's committed offsets, reads every partition to its end (or until its
time budget runs out), and writes each message's event to
``<root>/dt=<event day>/<topic>+<partition>+<first offset>-<last offset>.jsonl``: a file per day and
partition, named by the offsets it holds, so writing the same offsets again gives the same file.
Files are written under ``<root>/.incoming``, fsynced, renamed into their day folder (and the folder
fsynced); only then are the offsets committed. A crash between the two leaves files whose offsets
the next run reads again: its files replace them (same offsets, same name; a wider range removes the
narrower file), and the week's reader drops repeated event ids anyway.

Values are JSON objects or, with ``KAFKA_AVRO_SCHEMA``, Avro records of that schema (plain binary,
or with the schema registry's 5-byte header). A value that does not deserialize is counted and
skipped; what is kept of it is where it was (partition, offset) and the kind of error, never its
content.

``kafka_values.py`` reads the values, ``kafka_files.py`` writes the day files, ``kafka_landing.py``
records what a landing did; this module is the consumer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from customer_assets.errors import first_line

# Which KAFKA_* variables are client settings (the security ones, passed by name) is read with the
# other variables, in settings.py.
from customer_assets.sources.kafka_files import (
    INCOMING,
    DayFile,
    publish_day_files,
    remove_replaced_files,
    sweep_incoming,
)
from customer_assets.sources.kafka_landing import Landing, PartitionProgress
from customer_assets.sources.kafka_values import AvroDecoder, Undecodable, decode_json, event_day

log = logging.getLogger(__name__)

MAX_EXAMPLES = 10  # values that did not deserialize, shown in the run log and the metadata


class KafkaUnavailable(Exception):
    """The brokers did not answer within the bound, or refused the consumer: one line, no retry."""


# --- the consumer ---------------------------------------------------------------------------------


def _commit(consumer, offsets: list) -> None:
    """Commit synchronously; a separate function so a test can fail the step at exactly this
    point."""
    consumer.commit(offsets=offsets, asynchronous=False)


class KafkaSource(dg.ConfigurableResource):
    """The Kafka topic of behavioural events (``KAFKA_BROKERS``), landed into the events landing
    zone.

    Security settings (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``) reach the
    client as ``security.protocol``, ``sasl.*``, ``ssl.*``; their values are read when the client is
    made and never stored in the resource's config or logged.
    """

    brokers: str | None = Field(
        default=None, description="Bootstrap servers (KAFKA_BROKERS); unset: no Kafka."
    )
    topic: str = Field(default="customer-events", description="The events topic (KAFKA_TOPIC).")
    group_id: str = Field(
        default="customer-assets",
        description="Consumer group whose offsets are committed "
        "once the files are safe (KAFKA_GROUP_ID).",
    )
    avro_schema: str | None = Field(
        default=None,
        description="Avro schema file of the values (KAFKA_AVRO_SCHEMA); unset: JSON values.",
    )
    max_lag_days: float = Field(
        default=3.0,
        description="Consumer lag at the week's end, in days, above which "
        "the week is partial (KAFKA_MAX_LAG_DAYS).",
    )
    timeout_seconds: float = Field(
        default=30.0,
        description="How long the brokers may take to answer before the "
        "step fails (KAFKA_TIMEOUT_SECONDS).",
    )
    consume_seconds: float = Field(
        default=1800.0,
        description="Time budget of one landing; what is left waits "
        "for the next run (KAFKA_CONSUME_SECONDS).",
    )
    security_settings: dict[str, str] = Field(
        default_factory=dict,
        description="Client setting -> name of the "
        "environment variable holding its value (values never in config).",
    )

    @property
    def configured(self) -> bool:
        return bool(self.brokers)

    def _secrets(self) -> dict[str, str]:
        return {
            setting: dg.EnvVar(name).get_value() or ""
            for setting, name in self.security_settings.items()
        }

    def client_config(self) -> dict:
        ms = int(self.timeout_seconds * 1000)
        return {
            "bootstrap.servers": self.brokers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "socket.connection.setup.timeout.ms": max(ms, 1000),
            "socket.timeout.ms": max(ms, 10),
            "log_level": 0,
            "logger": logging.getLogger("customer_assets.kafka.client"),
            **self._secrets(),
        }

    def _one_line(self, what: str, exc: BaseException) -> KafkaUnavailable:
        text = str(exc)
        for secret in self._secrets().values():
            if secret:
                text = text.replace(secret, "***")
        return KafkaUnavailable(
            f"Kafka unavailable: {what} at {self.brokers} (topic {self.topic}, group "
            f"{self.group_id}) within {self.timeout_seconds:g}s: {first_line(exc, text)[:300]}"
        )

    def decoder(self) -> Callable[[bytes | None], dict]:
        return AvroDecoder(self.avro_schema) if self.avro_schema else decode_json

    def backlog(self) -> dict[int, int]:
        """Per partition, messages past the group's committed offset (the sensor's question), or
        raises ``KafkaUnavailable``."""
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
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition),
                    timeout=self.timeout_seconds,
                    cached=False,
                )
                waiting[tp.partition] = max(high - max(tp.offset, low), 0)
            return waiting
        except KafkaException as exc:
            raise self._one_line("no answer from the brokers", exc) from None
        finally:
            consumer.close()

    def land(
        self, root: Path, log: logging.Logger = log, max_messages: int | None = None
    ) -> Landing:
        """Consume from the group's committed offsets to the end of every partition (or the time
        budget, or ``max_messages``), write the day files durably, then commit. Raises
        ``KafkaUnavailable``."""
        from confluent_kafka import Consumer

        started = time.monotonic()
        decode = self.decoder()
        landing = Landing(self.topic)
        (root / INCOMING).mkdir(parents=True, exist_ok=True)
        sweep_incoming(root)
        consumer = Consumer(self.client_config())
        files: dict[tuple[str, int], DayFile] = {}
        try:
            if not self._assign(consumer, landing):
                return landing
            self._consume(
                consumer,
                landing,
                started + self.consume_seconds,
                max_messages,
                lambda message, progress: self._take(
                    message, progress, landing, decode, files, root, log
                ),
            )
            self._publish_and_commit(consumer, root, files, landing)
            landing.committed = True
        finally:
            for day_file in files.values():
                if not day_file.handle.closed:
                    day_file.discard()
            consumer.close()
            landing.seconds = time.monotonic() - started
        return landing

    def _assign(self, consumer, landing: Landing) -> bool:
        """Assigns every partition of the topic from the group's committed offset (its beginning
        when none was committed); False when the topic does not exist."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            topics = consumer.list_topics(self.topic, timeout=self.timeout_seconds).topics
            meta = topics.get(self.topic)
            if meta is None or meta.error is not None:
                landing.topic_exists = False
                return False
            tps = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
            committed = consumer.committed(tps, timeout=self.timeout_seconds)
        except KafkaException as exc:
            raise self._one_line("no answer from the brokers", exc) from None
        for tp in committed:
            landing.partitions[tp.partition] = PartitionProgress(
                committed_before=tp.offset if tp.offset >= 0 else None
            )
        consumer.assign(
            [
                TopicPartition(
                    self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
        )
        return True

    def _consume(
        self, consumer, landing: Landing, deadline: float, max_messages: int | None, take: Callable
    ) -> None:
        """Reads until every partition is at its end, the deadline passes or ``max_messages`` were
        read, handing each message to ``take``; brokers silent for ``timeout_seconds`` raise
        ``KafkaUnavailable``."""
        quiet_since = time.monotonic()
        while not all(p.reached_end for p in landing.partitions.values()):
            if time.monotonic() > deadline or (
                max_messages is not None and landing.messages >= max_messages
            ):
                break
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.timeout_seconds:
                raise KafkaUnavailable(
                    f"Kafka unavailable: the brokers at {self.brokers} sent nothing for "
                    f"{self.timeout_seconds:g}s while partitions of {self.topic} were "
                    "not read to their end"
                )
            for message in batch:
                progress = landing.partitions.setdefault(message.partition(), PartitionProgress())
                if self._passed_over(message, progress):
                    continue
                take(message, progress)
                if max_messages is not None and landing.messages >= max_messages:
                    break

    def _passed_over(self, message, progress: PartitionProgress) -> bool:
        """Whether the message is an error event to pass over: a partition's end (noted) or a
        transient error. An error the consumer cannot get past (fatal, transport, authorization)
        raises ``KafkaUnavailable``."""
        from confluent_kafka import KafkaError, KafkaException

        error = message.error()
        if error is None:
            return False
        if error.code() == KafkaError._PARTITION_EOF:
            progress.reached_end = True
            return True
        if error.fatal() or error.code() in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
        ):
            raise self._one_line("the consumer failed", KafkaException(error))
        return True

    def _publish_and_commit(
        self, consumer, root: Path, files: dict[tuple[str, int], DayFile], landing: Landing
    ) -> None:
        """The day files made durable, the files they replace removed, then the offsets
        committed."""
        from confluent_kafka import KafkaException, TopicPartition

        ranges = {
            p: (v.first, v.last) for p, v in landing.partitions.items() if v.first is not None
        }
        landing.files += [str(path) for path in publish_day_files(root, self.topic, files)]
        replaced = remove_replaced_files(root, self.topic, ranges, {Path(f) for f in landing.files})
        landing.replaced += [str(path) for path in replaced]
        offsets = [
            TopicPartition(self.topic, p, last + 1) for p, (_, last) in sorted(ranges.items())
        ]
        if offsets:
            try:
                _commit(consumer, offsets)
            except KafkaException as exc:
                raise self._one_line(
                    "the offsets could not be committed (the files are safe; the next "
                    "run rewrites the same files)",
                    exc,
                ) from None

    def _take(
        self,
        message,
        progress: PartitionProgress,
        landing: Landing,
        decode,
        files,
        root: Path,
        log: logging.Logger,
    ) -> None:
        offset, partition = message.offset(), message.partition()
        if (
            progress.first is None
            and progress.committed_before is not None
            and offset > progress.committed_before
        ):
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
                log.warning(
                    f"skipping a value that does not deserialize: partition {partition}, "
                    f"offset {offset} ({exc})"
                )
            return
        day = event_day(event, progress.last_timestamp_ms)
        day_file = files.get((day, partition))
        if day_file is None:
            day_file = files[(day, partition)] = DayFile(root, day)
        day_file.write(offset, json.dumps(event, separators=(",", ":")).encode())
        landing.written += 1
        landing.days[day] = landing.days.get(day, 0) + 1
