"""The Kafka consumer (issue 25) against a real broker (tansu, started by the tests): the topic
landed as the landing zone's day files, offsets committed only after the files are safe, values that
do not deserialize counted by location only, the lag and retention rules, an unreachable broker in
bounded time."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fastavro
import pytest

import customer_assets.sources.kafka as kafka_module
from customer_assets.assets.kafka import empty_week_hint, lag_outcome
from customer_assets.sources.events import aggregate, read_week
from customer_assets.sources.kafka import KafkaSource, KafkaUnavailable
from customer_assets.sources.kafka_files import week_event_lines
from customer_assets.sources.kafka_landing import Landing, PartitionProgress
from customer_assets.sources.kafka_values import AvroDecoder, Undecodable, decode_json, event_day
from customer_assets_tests.support.kafka_broker import (
    create_topic,
    free_port,
    kafka_broker,
    produce,
)

START = datetime(2026, 11, 16, tzinfo=timezone.utc)
END = datetime(2026, 11, 23, tzinfo=timezone.utc)
SECRET_TEXT = (
    "card 4111-1111 said hello"  # customer text inside a malformed value: must never be reported
)


def _event(n: int, day: int = 17, kind: str = "page_view", customer: str | None = None) -> dict:
    return {
        "event_id": f"e{n}",
        "event_type": kind,
        "customer_id": customer or f"C{n % 7}",
        "timestamp": f"2026-11-{day:02d}T{n % 24:02d}:00:00Z",
        "properties": {"amount_usd": 10.0 + n} if kind == "purchase_completed" else {},
    }


def _messages(events: list[dict], partitions: int = 3) -> list[tuple[int, bytes, int]]:
    return [
        (i % partitions, json.dumps(e).encode(), 1_763_337_600_000 + i)
        for i, e in enumerate(events)
    ]


MALFORMED = [
    b"not json " + SECRET_TEXT.encode(),
    b'{"event_type": "page_view", "note": "' + b"\xff" + b'"}',
    b"[1, 2, 3]",
    None,
]


def _source(brokers: str, topic: str, **kwargs) -> KafkaSource:
    return KafkaSource(
        brokers=brokers, topic=topic, group_id=f"g-{topic}", timeout_seconds=10, **kwargs
    )


def _topic(brokers: str, partitions: int = 3) -> str:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, partitions)
    return topic


# --- deserialization and days, no broker
# ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, kind",
    [
        (None, "null value (tombstone)"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{oops " + SECRET_TEXT.encode(), "invalid JSON at column 2"),
        (b"[1]", "not a JSON object"),
    ],
)
def test_json_values_that_do_not_deserialize_name_their_kind_never_their_text(value, kind):
    with pytest.raises(Undecodable) as raised:
        decode_json(value)
    assert str(raised.value) == kind and SECRET_TEXT not in str(raised.value)


AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_type", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "properties",
            "type": {
                "type": "record",
                "name": "Props",
                "fields": [
                    {"name": "feature", "type": ["null", "string"], "default": None},
                    {"name": "amount_usd", "type": ["null", "double"], "default": None},
                ],
            },
        },
    ],
}


def _avro(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(AVRO_SCHEMA), record)
    return out.getvalue()


def _avro_record(n: int) -> dict:
    return {
        "event_id": f"a{n}",
        "event_type": "feature_used",
        "customer_id": f"C{n % 3}",
        "timestamp": datetime(2026, 11, 18, 9, n % 60, tzinfo=timezone.utc),
        "properties": {"feature": f"f{n % 4}", "amount_usd": None},
    }


def test_avro_values_plain_or_with_the_registry_header_become_events(tmp_path):
    schema = tmp_path / "event.avsc"
    schema.write_text(json.dumps(AVRO_SCHEMA))
    decode = AvroDecoder(str(schema))
    plain = decode(_avro(_avro_record(1)))
    framed = decode(b"\x00\x00\x00\x00\x07" + _avro(_avro_record(1)))
    assert plain == framed and plain["timestamp"] == "2026-11-18T09:01:00+00:00"
    for value in (b"\x02", b"garbage bytes " + SECRET_TEXT.encode(), None):
        with pytest.raises(Undecodable) as raised:
            decode(value)
        assert SECRET_TEXT not in str(raised.value)


def test_an_event_lands_in_the_day_of_its_own_time_else_of_the_record():
    assert event_day({"timestamp": "2026-11-22T23:30:00-02:00"}, 0) == "2026-11-23"
    assert event_day({"timestamp": "yesterday"}, 1_763_337_600_000) == "2025-11-17"
    assert event_day({}, 1_763_337_600_000) == "2025-11-17"


def test_lag_at_the_weeks_end_and_retention_make_the_week_partial():
    landing = Landing(
        "t",
        partitions={
            0: PartitionProgress(reached_end=True),
            1: PartitionProgress(last_timestamp_ms=int(END.timestamp() * 1000) - 4 * 86_400_000),
        },
    )
    assert landing.lag_days(END) == pytest.approx(4.0)
    assert lag_outcome(4.0, 3, 0)[0] is False and lag_outcome(2.0, 3, 0)[0] is True
    assert lag_outcome(0.0, 3, 12)[0] is False and "retention" in lag_outcome(0.0, 3, 12)[1]
    assert Landing("t", partitions={0: PartitionProgress()}).lag_days(END) == float("inf")
    hint = empty_week_hint("customer-events", True)
    assert "customer-events" in hint and "retention" in hint


# --- against the broker
# ------------------------------------------------------------------------------------------


def test_a_topic_lands_as_day_files_named_by_partition_and_offsets_then_commits(
    kafka_broker, tmp_path, caplog
):
    topic = _topic(kafka_broker)
    events = [
        _event(n, day=16 + n % 7, kind=("page_view", "purchase_completed", "feature_used")[n % 3])
        for n in range(300)
    ]
    produce(
        kafka_broker,
        topic,
        _messages(events) + [(i % 3, v, 1_763_337_600_000) for i, v in enumerate(MALFORMED)],
    )
    source = _source(kafka_broker, topic)
    landing = source.land(tmp_path / "zone")
    assert (
        landing.committed
        and landing.messages == 304
        and landing.written == 300
        and landing.undecodable == 4
    )
    assert all(set(e) == {"partition", "offset", "error"} for e in landing.examples)
    assert SECRET_TEXT not in json.dumps(landing.summary()) and SECRET_TEXT not in caplog.text
    names = sorted(p.name for p in (tmp_path / "zone").glob("dt=*/*.jsonl"))
    assert names and all(
        n.startswith(f"{topic}+") and n.count("+") == 2 and "-" in n.split("+")[2] for n in names
    )
    assert {p.parent.name for p in (tmp_path / "zone").glob("dt=*/*")} == {
        f"dt=2026-11-{d}" for d in range(16, 23)
    }
    assert not list((tmp_path / "zone" / ".incoming").iterdir())
    # the same events read from the files as from a connector's
    files = tmp_path / "files" / "dt=2026-11-16"
    files.mkdir(parents=True)
    (files / "customer-events+0+0000000000.jsonl").write_text(
        "\n".join(json.dumps(e) for e in events) + "\n"
    )
    landed, _ = read_week(tmp_path / "zone", START, END, max_malformed_share=0)
    written, _ = read_week(tmp_path / "files", START, END, max_malformed_share=0)
    assert aggregate(landed).equals(aggregate(written))
    assert week_event_lines(tmp_path / "zone", topic, START, END) == 300
    # committed: a second landing reads nothing new
    again = source.land(tmp_path / "zone")
    assert again.messages == 0 and again.lag_days(END) == 0
    assert sorted(p.name for p in (tmp_path / "zone").glob("dt=*/*.jsonl")) == names


def test_a_crash_between_the_files_and_the_commit_counts_no_event_twice(
    kafka_broker, tmp_path, monkeypatch
):
    topic = _topic(kafka_broker)
    events = [_event(n, day=17 + n % 3) for n in range(120)]
    produce(kafka_broker, topic, _messages(events))
    source = _source(kafka_broker, topic)

    def crash(consumer, offsets):
        raise RuntimeError("killed between writing and committing")

    monkeypatch.setattr(kafka_module, "_commit", crash)
    with pytest.raises(RuntimeError, match="killed"):
        source.land(tmp_path / "zone")
    first_files = sorted((tmp_path / "zone").glob("dt=*/*.jsonl"))
    assert first_files  # the files are safe, the offsets are not committed
    monkeypatch.undo()
    # more messages arrive before the re-run: its offset ranges are wider, and the narrower files
    # are replaced
    later = [_event(n, day=19) for n in range(120, 150)]
    produce(kafka_broker, topic, _messages(later))
    rerun = source.land(tmp_path / "zone")
    assert rerun.messages == 150 and rerun.committed and rerun.replaced
    events_read, scan = read_week(tmp_path / "zone", START, END, max_malformed_share=0)
    assert events_read.num_rows == 150 and scan.repeated_events == 0
    assert aggregate(events_read)["page_views"].sum() == 150


def test_the_weeks_reader_drops_a_redelivered_event_of_another_file(tmp_path):
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    lines = [json.dumps(_event(n)) for n in range(10)]
    (folder / "t+0+0000000000-0000000009.jsonl").write_text("\n".join(lines) + "\n")
    # a redelivery
    (folder / "t+0+0000000005-0000000012.jsonl").write_text("\n".join(lines[5:]) + "\n")
    events, scan = read_week(tmp_path, START, END, max_malformed_share=0)
    assert events.num_rows == 10 and scan.repeated_events == 5
    assert aggregate(events)["page_views"].sum() == 10


def test_avro_values_land_with_the_schema_file(kafka_broker, tmp_path):
    topic = _topic(kafka_broker)
    schema = tmp_path / "event.avsc"
    schema.write_text(json.dumps(AVRO_SCHEMA))
    produce(
        kafka_broker,
        topic,
        [(n % 3, _avro(_avro_record(n)), 1_763_337_600_000) for n in range(30)]
        + [(0, b"\x00\x00not avro " + SECRET_TEXT.encode(), 1_763_337_600_000)],
    )
    landing = _source(kafka_broker, topic, avro_schema=str(schema)).land(tmp_path / "zone")
    assert (
        landing.written == 30
        and landing.undecodable == 1
        and SECRET_TEXT not in json.dumps(landing.summary())
    )
    events, _ = read_week(tmp_path / "zone", START, END, max_malformed_share=0)
    assert aggregate(events)["unique_features_used"].tolist() == [4, 4, 4]


def test_a_consumer_that_stops_short_leaves_the_week_partial(kafka_broker, tmp_path):
    topic = _topic(kafka_broker, partitions=1)
    produce(
        kafka_broker,
        topic,
        [
            (
                0,
                json.dumps(_event(n)).encode(),
                int(datetime(2026, 11, 17, tzinfo=timezone.utc).timestamp() * 1000) + n,
            )
            for n in range(50)
        ],
    )
    source = _source(kafka_broker, topic)
    short = source.land(tmp_path / "zone", max_messages=10)  # as a spent time budget would
    assert short.committed and short.messages == 10
    assert (
        short.lag_days(END) > 5
        and lag_outcome(short.lag_days(END), source.max_lag_days, 0)[0] is False
    )
    rest = source.land(tmp_path / "zone")
    assert rest.messages == 40 and rest.lag_days(END) == 0


def test_a_missing_topic_yields_nothing_and_says_so(kafka_broker, tmp_path):
    landing = _source(kafka_broker, f"absent-{uuid.uuid4().hex[:6]}").land(tmp_path / "zone")
    assert not landing.topic_exists and landing.messages == 0
    assert "does not exist" in empty_week_hint(landing.topic, landing.topic_exists)


def test_an_unreachable_broker_fails_with_one_line_within_the_bound(tmp_path):
    source = KafkaSource(
        brokers=f"127.0.0.1:{free_port()}", topic="customer-events", timeout_seconds=2
    )
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as raised:
        source.land(tmp_path / "zone")
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert (
        "\n" not in message and message.startswith("Kafka unavailable:") and "within 2s" in message
    )


# --- settings
# -------------------------------------------------------------------------------------------------


def test_kafka_settings_default_the_landing_zone_and_pass_security_by_name(monkeypatch, tmp_path):
    from customer_assets.settings import kafka_settings_from_env, settings_from_env

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EVENTS_PATH", raising=False)
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    assert settings_from_env().events_path is None
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.1:9092")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-value")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_HOME", "/opt/kafka")  # a Kafka installation's, not a client setting
    assert settings_from_env().events_path == str(tmp_path / "data" / "kafka_events")
    values = kafka_settings_from_env()
    assert values["topic"] == "customer-events" and values["max_lag_days"] == 3
    assert values["security_settings"] == {
        "sasl.password": "KAFKA_SASL_PASSWORD",
        "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    }
    source = KafkaSource(**values)
    assert "s3cret-value" not in json.dumps(source._convert_to_config_dictionary(), default=str)
    assert source.client_config()["sasl.password"] == "s3cret-value"
    monkeypatch.setenv("KAFKA_MAX_LAG_DAYS", "soon")
    with pytest.raises(ValueError, match="KAFKA_MAX_LAG_DAYS"):
        kafka_settings_from_env()
    monkeypatch.setenv("KAFKA_MAX_LAG_DAYS", "3")
    monkeypatch.setenv("KAFKA_AVRO_SCHEMA", str(tmp_path / "missing.avsc"))
    with pytest.raises(ValueError, match="KAFKA_AVRO_SCHEMA"):
        kafka_settings_from_env()


def test_without_kafka_the_step_consumes_nothing_and_says_so(monkeypatch, tmp_path):
    import dagster as dg

    from customer_assets.assets.kafka import kafka_events
    from customer_assets.settings import PipelineSettings

    settings = PipelineSettings(
        data_dir=str(tmp_path), reports_dir=str(tmp_path), etl_log_dir=str(tmp_path)
    )
    result = kafka_events(
        dg.build_asset_context(partition_key="2026-11-16"), kafka=KafkaSource(), settings=settings
    )
    assert result.metadata["source"] == "none" and all(c.passed for c in result.check_results)
    assert not list(Path(tmp_path).iterdir())


def test_the_arrivals_sensor_requests_a_landing_when_messages_wait(kafka_broker):
    import dagster as dg

    from customer_assets.assets.kafka import kafka_arrivals

    skipped = kafka_arrivals(dg.build_sensor_context(resources={"kafka": KafkaSource()}))
    assert isinstance(skipped, dg.SkipReason) and "KAFKA_BROKERS" in skipped.skip_message
    topic = _topic(kafka_broker)
    produce(kafka_broker, topic, _messages([_event(n) for n in range(30)]))
    request = kafka_arrivals(
        dg.build_sensor_context(resources={"kafka": _source(kafka_broker, topic)})
    )
    assert isinstance(request, dg.RunRequest) and request.partition_key
