"""The events topic landed as the landing zone's day files, before the week's aggregation reads
them."""

import hashlib
import math
from pathlib import Path

import dagster as dg

from customer_assets.assets.common import (
    OWNERS,
    PARTITIONS,
    check_spec,
    week_context,
)
from customer_assets.partitions import weekly_partitions
from customer_assets.settings import PipelineSettings
from customer_assets.sources.kafka import KafkaSource, KafkaUnavailable
from customer_assets.sources.kafka_files import week_event_lines
from customer_assets.sources.kafka_landing import Landing

KAFKA_EVENTS = dg.AssetKey(["landing_zone", "kafka_events"])


def _check(name: str, passed: bool, text: str, **figures) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=KAFKA_EVENTS,
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"result": dg.MetadataValue.md(text), **figures},
    )


def lag_outcome(lag_days: float, max_lag_days: float, lost_to_retention: int) -> tuple[bool, str]:
    """The week is complete when the consumer is within ``max_lag_days`` of the week's end and
    retention deleted nothing it had not read."""
    lag = (
        "not measurable (a partition could not be read in time)"
        if math.isinf(lag_days)
        else f"{lag_days:.2f} day(s)"
    )
    text = (
        f"consumer lag at the week's end: {lag}; the limit is {max_lag_days:g} (KAFKA_MAX_LAG_DAYS)"
    )
    if lost_to_retention:
        text += (
            f"; {lost_to_retention} message(s) were deleted by the topic's retention before the "
            "group read them"
        )
    return lag_days <= max_lag_days and not lost_to_retention, text


def empty_week_hint(topic: str, exists: bool) -> str:
    if not exists:
        return f"topic {topic} does not exist on the brokers: check KAFKA_TOPIC"
    return (
        f"topic {topic} yielded no event of the week: check that producers write to it and that "
        "its retention (retention.ms) keeps a week; events the group already read are in the "
        "landing zone"
    )


def no_kafka_result() -> dg.MaterializeResult:
    """The step's result without Kafka (KAFKA_BROKERS unset): nothing consumed, and nothing for the
    checks to warn of."""
    return dg.MaterializeResult(
        metadata={"source": "none", "messages": 0},
        check_results=[
            _check("consumer_lag", True, "no Kafka configured"),
            _check("week_has_events", True, "no Kafka configured"),
        ],
    )


def landing_metadata(
    topic: str, root: Path, landing: Landing, week_lines: int, complete: bool, lag: float
) -> dict:
    """What the landing consumed and wrote, and how complete the week is (its lag in days, none when
    it could not be measured)."""
    return {
        "source": "kafka",
        "topic": topic,
        "landing_zone": dg.MetadataValue.path(str(root)),
        "messages": landing.messages,
        "written": landing.written,
        "undecodable": landing.undecodable,
        "undecodable_examples": dg.MetadataValue.json(landing.examples),
        "week_events_landed": week_lines,
        "partial": not complete,
        "lag_days": None if math.isinf(lag) else round(lag, 3),
        "lost_to_retention": landing.lost_to_retention,
        "landing": dg.MetadataValue.json(landing.summary()),
    }


@dg.asset(
    key=KAFKA_EVENTS,
    partitions_def=PARTITIONS,
    group_name="profiles",
    kinds={"kafka"},
    owners=OWNERS,
    check_specs=[
        check_spec(
            "consumer_lag",
            KAFKA_EVENTS,
            description=(
                "Warns (the week is partial) when the consumer is more than KAFKA_MAX_LAG_DAYS "
                "behind the week's end, or retention deleted messages it had not read."
            ),
        ),
        check_spec(
            "week_has_events",
            KAFKA_EVENTS,
            description=(
                "Warns when the topic yielded no event of the week (check the topic and its "
                "retention)."
            ),
        ),
    ],
)
def kafka_events(
    context: dg.AssetExecutionContext, kafka: KafkaSource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """The events topic (`KAFKA_BROKERS`, `KAFKA_TOPIC`) landed in the landing zone as day files.

    Consumes from the group's committed offsets to the end of every partition, writes each day's
    events of a partition to `dt=YYYY-MM-DD/<topic>+<partition>+<first>-<last offset>.jsonl` (fsync,
    rename), and only then commits the offsets. Values that do not deserialize are counted and
    skipped (the first ten logged by partition and offset). The week's aggregation then reads the
    files, so a re-run of a past week needs no Kafka. Without `KAFKA_BROKERS` it consumes nothing
    and says so.
    """
    if not kafka.configured:
        context.log.info(
            "No Kafka configured (KAFKA_BROKERS unset): nothing consumed; the week's events come "
            "from the landing zone alone (EVENTS_PATH), if any."
        )
        return no_kafka_result()
    span = week_context(context)
    root = Path(settings.events_path)  # EVENTS_PATH, else $DATA_DIR/kafka_events (settings.py)
    try:
        landing = kafka.land(root, log=context.log)
    except KafkaUnavailable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if landing.undecodable > len(landing.examples):
        context.log.warning(
            f"{landing.undecodable - len(landing.examples):,} more values that do not deserialize "
            f"not shown ({landing.undecodable:,} in total)"
        )
    lag = landing.lag_days(span.week_end)
    complete, lag_text = lag_outcome(lag, kafka.max_lag_days, landing.lost_to_retention)
    week_lines = week_event_lines(root, kafka.topic, span.week_start, span.week_end)
    if not complete:
        context.log.warning(f"the week is partial: {lag_text}")
    hint = None if week_lines else empty_week_hint(kafka.topic, landing.topic_exists)
    if hint:
        context.log.warning(hint)
    return dg.MaterializeResult(
        metadata=landing_metadata(kafka.topic, root, landing, week_lines, complete, lag),
        check_results=[
            _check(
                "consumer_lag",
                complete,
                lag_text,
                lag_days=-1.0 if math.isinf(lag) else round(lag, 3),
            ),
            _check(
                "week_has_events",
                bool(week_lines),
                hint or f"{week_lines:,} event line(s) of the week landed from {kafka.topic}",
                week_events_landed=week_lines,
            ),
        ],
    )


@dg.sensor(
    name="kafka_arrivals",
    asset_selection=[KAFKA_EVENTS],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Lands the events topic between weekly runs when messages wait past the group's "
    "offsets (the landing-zone sensor then re-runs loaded weeks that late files touch).",
)
def kafka_arrivals(context: dg.SensorEvaluationContext, kafka: KafkaSource):
    """Requests a run of `landing_zone/kafka_events` (for the newest week) when the topic holds
    messages past the group's committed offsets, once per set of end offsets."""
    if not kafka.configured:
        return dg.SkipReason("no Kafka configured (KAFKA_BROKERS unset)")
    try:
        waiting = kafka.backlog()
    except KafkaUnavailable as exc:
        return dg.SkipReason(str(exc))
    if not sum(waiting.values()):
        return dg.SkipReason(f"no message waiting on {kafka.topic}")
    week = weekly_partitions.get_last_partition_key()
    if week is None:
        return dg.SkipReason("no complete week yet")
    key = hashlib.sha1(repr(sorted(waiting.items())).encode()).hexdigest()[:12]
    return dg.RunRequest(
        run_key=f"kafka:{key}", partition_key=week, tags={"trigger": "kafka_arrivals"}
    )
