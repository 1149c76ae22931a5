"""Issue 25: a week whose events come straight from Kafka (tansu, started by the tests), through the
real graph and the real CLI: the same aggregates as from the same events written as files; a crash
between the files and the commit counts nothing twice; an unreachable broker fails only the Kafka
step, in one line and in time."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

import customer_assets.sources.kafka as kafka_module
from customer_assets.sources.events import aggregate, read_week
from customer_assets.sources.kafka_values import Undecodable, decode_json
from customer_assets.weeks import WeekContext
from customer_assets_tests.support.environ import clean_environ
from customer_assets_tests.support.kafka_broker import (
    create_topic,
    free_port,
    kafka_broker,
    landing_zone_messages,
    produce,
)
from customer_assets_tests.support.pipeline import run_week
from customer_assets_tests.support.sources import EVENTS, socket_dir

WEEK = "2026-11-16"
KAFKA_STEP = "landing_zone__kafka_events"
AGGREGATES = dg.AssetKey(["etl", "customer_event_aggregates"])
KAFKA_EVENTS = dg.AssetKey(["landing_zone", "kafka_events"])
MALFORMED = [
    (0, b"customer wrote: my address is 1 Main St", 1_763_337_600_000),
    (1, b"\xff\xfe", 1_763_337_600_000),
    (2, None, 1_763_337_600_000),
    (1, b"[]", 1_763_337_600_000),
]


@pytest.fixture(scope="module")
def events_topic(kafka_broker, small_source):
    """The small source's event files, every line a message across 3 partitions (the files' own
    broken lines included), plus 4 malformed values."""
    topic = f"customer-events-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_broker, topic, 3)
    produce(kafka_broker, topic, landing_zone_messages(EVENTS["small_source"]) + MALFORMED)
    return topic


def _undecodable(value) -> bool:
    try:
        decode_json(value)
    except Undecodable:
        return True
    return False


@pytest.fixture(scope="module")
def expected(small_source) -> pd.DataFrame:
    """The week's aggregates from the same events as files."""
    week = WeekContext.of(WEEK)
    events, _ = read_week(
        EVENTS["small_source"], week.week_start, week.week_end, max_malformed_share=1
    )
    return aggregate(events)


def _use_kafka(pipeline_env, monkeypatch, brokers: str, topic: str) -> Path:
    # no EVENTS_PATH: the landing zone defaults under DATA_DIR
    tmp = pipeline_env("small_source", events=False)
    monkeypatch.setenv("KAFKA_BROKERS", brokers)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv("KAFKA_GROUP_ID", f"pipeline-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("KAFKA_TIMEOUT_SECONDS", "3")
    return tmp


def _kept_aggregates(kept: Path) -> pd.DataFrame:
    return pd.read_parquet(kept / "etl" / "customer_event_aggregates" / f"{WEEK}.parquet")


def _same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    columns = [
        "customer_id",
        "page_views",
        "unique_features_used",
        "purchase_count",
        "purchase_amount",
        "support_interactions",
    ]
    left = actual[columns].sort_values("customer_id").reset_index(drop=True)
    right = expected[columns].sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_a_week_from_kafka_equals_the_week_from_the_same_events_as_files(
    pipeline_env, monkeypatch, kafka_broker, events_topic, expected, tmp_path
):
    tmp = _use_kafka(pipeline_env, monkeypatch, kafka_broker, events_topic)
    result = run_week(WEEK, keep_intermediates_in=tmp_path / "kept")
    assert result.success
    _same(_kept_aggregates(tmp_path / "kept"), expected)
    landed = result.asset_materializations_for_node(KAFKA_STEP)[0].metadata
    broken = sum(
        _undecodable(v) for _, v, _ in landing_zone_messages(EVENTS["small_source"]) + MALFORMED
    )
    assert landed["undecodable"].value == broken > 4 and landed["partial"].value is False
    assert "Main St" not in str(landed["undecodable_examples"].value)
    assert len(landed["undecodable_examples"].value) == 10
    assert all(
        set(e) == {"partition", "offset", "error"} for e in landed["undecodable_examples"].value
    )
    assert (tmp / "data" / "kafka_events").is_dir()
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == KAFKA_EVENTS
    }
    assert checks == {"consumer_lag": True, "week_has_events": True}
    # A re-run of the week needs nothing new from Kafka: the files are there, the offsets committed.
    again = run_week(WEEK, keep_intermediates_in=tmp_path / "again")
    assert again.asset_materializations_for_node(KAFKA_STEP)[0].metadata["messages"].value == 0
    _same(_kept_aggregates(tmp_path / "again"), expected)


def test_a_crash_between_the_files_and_the_commit_counts_no_event_twice(
    pipeline_env, monkeypatch, kafka_broker, events_topic, expected, tmp_path
):
    _use_kafka(pipeline_env, monkeypatch, kafka_broker, events_topic)
    selection = [KAFKA_EVENTS, AGGREGATES]

    def killed(consumer, offsets):
        raise RuntimeError("step killed after writing its files, before committing")

    monkeypatch.setattr(kafka_module, "_commit", killed)
    crashed = run_week(WEEK, selection=selection, raise_on_error=False)
    assert not crashed.success
    assert [e.step_key for e in crashed.all_events if e.is_step_failure] == [KAFKA_STEP]
    monkeypatch.setattr(
        kafka_module,
        "_commit",
        lambda consumer, offsets: consumer.commit(offsets=offsets, asynchronous=False),
    )
    rerun = run_week(WEEK, selection=selection, keep_intermediates_in=tmp_path / "kept")
    assert rerun.success
    # read again
    assert rerun.asset_materializations_for_node(KAFKA_STEP)[0].metadata["messages"].value > 0
    _same(_kept_aggregates(tmp_path / "kept"), expected)


def test_an_unreachable_broker_fails_the_kafka_step_in_one_line_and_the_transactions_load(
    pipeline_env, monkeypatch, small_source, tmp_path
):
    # bound: 3 s
    tmp = _use_kafka(pipeline_env, monkeypatch, f"127.0.0.1:{free_port()}", "customer-events")
    instance = dg.DagsterInstance.ephemeral()
    result = run_week(WEEK, raise_on_error=False, instance=instance)
    failures = {
        e.step_key: e.step_failure_data.error.message.strip()
        for e in result.all_events
        if e.is_step_failure
    }
    assert list(failures) == [KAFKA_STEP], failures
    said = [line for line in failures[KAFKA_STEP].splitlines() if "Kafka unavailable" in line]
    assert len(said) == 1 and "within 3s" in said[0], failures[KAFKA_STEP]
    times = {
        log.dagster_event.event_type_value: log.timestamp
        for log in instance.all_logs(result.run_id)
        if log.dagster_event
        and log.dagster_event.step_key == KAFKA_STEP
        and log.dagster_event.event_type_value in ("STEP_START", "STEP_FAILURE")
    }
    assert times["STEP_FAILURE"] - times["STEP_START"] < 3 + 10
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["customer_analytics", "weekly_transactions"]) in materialized
    assert dg.AssetKey(["customer_analytics", "weekly_customer_profiles"]) not in materialized
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]


def test_the_cli_loads_profiles_whose_event_figures_come_from_the_topic(
    pg_server, small_source, kafka_broker, events_topic, expected, tmp_path
):
    """`dagster asset materialize --select '*'` with KAFKA_BROKERS set and no EVENTS_PATH."""
    env = clean_environ()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "DB_HOST": socket_dir(pg_server),
            "DB_USER": "postgres",
            "DB_NAME": "small_source",
            "DATA_DIR": str(tmp_path / "data"),
            "WAREHOUSE_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "ETL_LOG_DIR": str(tmp_path / "logs"),
            "PII_HASH_KEY": "test-hash-key",
            "DAGSTER_DEPLOYMENT": "local",
            "KAFKA_BROKERS": kafka_broker,
            "KAFKA_TOPIC": events_topic,
            "KAFKA_GROUP_ID": f"cli-{uuid.uuid4().hex[:6]}",
        }
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "customer_assets",
            "--select",
            "*",
            "--partition",
            WEEK,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list((tmp_path / "data" / "kafka_events").glob(f"dt=*/{events_topic}+*.jsonl"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        profiles = con.execute(f"""SELECT customer_id, page_views, unique_features_used, support_interactions,
            source_version FROM customer_analytics.weekly_customer_profiles
            WHERE week_start = TIMESTAMP '{WEEK}'""").df()
    assert profiles["source_version"].str.contains("events=landing_zone").all()
    figures = profiles.set_index("customer_id")[
        ["page_views", "unique_features_used", "support_interactions"]
    ]
    from_files = expected.assign(customer_id=expected["customer_id"]).set_index("customer_id")[
        figures.columns
    ]
    common = figures.index.intersection(from_files.index)
    assert len(common) > 50 and figures["page_views"].sum() > 0
    pd.testing.assert_frame_equal(
        figures.loc[common].sort_index(), from_files.loc[common].sort_index(), check_dtype=False
    )
