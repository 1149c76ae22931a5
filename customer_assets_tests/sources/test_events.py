"""Reading the landing zone (real files), aggregating, and the sensor that watches it."""

import gzip
import json
import logging
import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from customer_assets.sensors import events_landing_zone, new_event_files, weeks_touched
from customer_assets.settings import PipelineSettings
from customer_assets.sources.event_parse import MAX_EXAMPLES
from customer_assets.sources.events import MalformedEventsError, aggregate, read_week

START, END = (
    datetime(2026, 11, 16, tzinfo=timezone.utc),
    datetime(2026, 11, 23, tzinfo=timezone.utc),
)


def event(kind, customer, ts, **props):
    return json.dumps(
        {
            "event_id": "e",
            "event_type": kind,
            "customer_id": customer,
            "timestamp": ts,
            "properties": props,
        }
    )


def write(
    root: Path, day: str, lines: list[str], name="customer-events+0+0000000000.jsonl"
) -> Path:
    folder = root / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def zone(tmp_path):
    """Two malformed lines in 14: above the default malformed share, so its tests pass
    max_malformed_share=1."""
    root = tmp_path / "events"
    write(
        root,
        "2026-11-16",
        [
            event("page_view", "C1", "2026-11-16T10:00:00Z"),
            event("pageview", " c1 ", "2026-11-16T10:01:00Z"),  # alias and messy id
            event("feature_used", "C1", "2026-11-16T10:02:00Z", feature="exports"),
            event("feature_used", "C1", "2026-11-16T10:03:00Z", feature="exports"),
            event("feature_used", "C1", "2026-11-16T10:04:00Z", feature="alerts"),
            '{"event_type": "page_view", "customer_id": "C2", "timestam',  # truncated line
            event("purchase_completed", "C2", "2026-11-17T09:00:00+01:00", amount_usd=30.5),
            event("order_completed", "C2", "2026-11-18T09:00:00Z", amount_usd=10.0),
            event("support_chat_started", "C2", "2026-11-18T09:30:00Z"),
            event("newsletter_opened", "C2", "2026-11-18T09:31:00Z"),
        ],
    )
    write(
        root,
        "2026-11-15",
        [
            event("page_view", "C1", "2026-11-15T23:59:00Z"),  # previous week
            event("page_view", "C3", "2026-11-16T00:00:30Z"),
        ],
    )  # late file, this week
    write(root, "2026-11-23", [event("page_view", "C1", "2026-11-23T00:00:00Z"), "not json"])
    return root


def test_read_week_skips_malformed_lines_with_file_and_line(zone):
    events, scan = read_week(zone, START, END, max_malformed_share=1)
    assert scan.files == 3 and len(scan.malformed) == 2 and scan.malformed_lines == 2
    assert {(Path(m["file"]).parent.name, m["line"]) for m in scan.malformed} == {
        ("dt=2026-11-16", 6),
        ("dt=2026-11-23", 2),
    }
    assert (
        scan.outside_week == 2
        and scan.aliased == 2
        and scan.unknown_types == {"newsletter_opened": 1}
    )
    assert sorted(events["customer_id"].unique().to_pylist()) == ["C1", "C2", "C3"]


def test_aggregates_per_customer(zone):
    events, _ = read_week(zone, START, END, max_malformed_share=1)
    agg = aggregate(events).set_index("customer_id")
    assert agg.loc[
        "C1", ["page_views", "unique_features_used", "purchase_count", "support_interactions"]
    ].tolist() == [2, 2, 0, 0]
    assert agg.loc["C2", "purchase_count"] == 2 and agg.loc[
        "C2", "purchase_amount"
    ] == pytest.approx(40.5)
    assert agg.loc["C2", "support_interactions"] == 1 and agg.loc["C3", "page_views"] == 1


def test_configured_aliases_are_applied(zone):
    events, scan = read_week(
        zone, START, END, {"newsletter_opened": "page_view"}, max_malformed_share=1
    )
    assert scan.unknown_types == {} and events["customer_id"].to_pylist().count("C2") == 4


def test_empty_landing_zone_gives_typed_empty_aggregates(tmp_path):
    # no lines: nothing to stop
    events, scan = read_week(tmp_path, START, END, max_malformed_share=0)
    agg = aggregate(events)
    assert agg.empty and scan.files == 0 and str(agg["page_views"].dtype) == "int64"


def test_cursor_sees_each_file_once(zone):
    files, cursor = new_event_files(zone, {})
    assert len(files) == 3
    assert new_event_files(zone, cursor) == ([], cursor)
    late = write(
        zone, "2026-11-19", [event("page_view", "C1", "2026-11-19T08:00:00Z")], name="late.jsonl"
    )
    os.utime(late, ns=(cursor["mtime_ns"] + 1, cursor["mtime_ns"] + 1))
    files, cursor2 = new_event_files(zone, cursor)
    assert files == [late] and cursor2["mtime_ns"] > cursor["mtime_ns"]


def test_weeks_touched_include_the_week_after_a_sunday_folder(zone):
    assert set(weeks_touched(sorted(zone.glob("dt=*/*")))) == {
        "2026-11-09",
        "2026-11-16",
        "2026-11-23",
    }


def test_sensor_never_requests_the_landing_zone_history(tmp_path):
    """Issue 13: with an empty cursor the first tick requested a run for every week that had an
    event file (13 in the demo, weeks never materialized among them); months of history meant months
    of runs."""
    from datetime import date, timedelta

    settings = PipelineSettings(
        data_dir="d", reports_dir="r", etl_log_dir="l", events_path=str(tmp_path)
    )
    day = date(2026, 5, 4)
    while day < date(2026, 11, 22):  # six months of daily files
        write(tmp_path, day.isoformat(), [event("page_view", "C1", f"{day.isoformat()}T08:00:00Z")])
        day += timedelta(days=1)
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, resources={"settings": settings})
    first = events_landing_zone(context)
    assert isinstance(first, dg.SkipReason) and "taken as seen" in first.skip_message
    baseline = context.cursor
    assert json.loads(baseline) == new_event_files(tmp_path, {})[1]

    # Week 2026-11-09 is loaded; 2026-11-16 is not. Late files land for both.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=dg.AssetKey(["customer_analytics", "weekly_customer_profiles"]),
            partition="2026-11-09",
        )
    )
    stamp = json.loads(baseline)["mtime_ns"] + 1
    for folder in ("2026-11-11", "2026-11-18"):
        late = write(
            tmp_path, folder, [event("page_view", "C2", f"{folder}T09:00:00Z")], name="late.jsonl"
        )
        os.utime(late, ns=(stamp, stamp))
    context = dg.build_sensor_context(
        cursor=baseline, instance=instance, resources={"settings": settings}
    )
    later = events_landing_zone(context)
    assert [r.partition_key for r in later] == ["2026-11-09"]
    again = events_landing_zone(
        dg.build_sensor_context(
            cursor=context.cursor, instance=instance, resources={"settings": settings}
        )
    )
    assert isinstance(again, dg.SkipReason)


def test_lines_without_id_type_or_valid_time_are_malformed(tmp_path):
    write(
        tmp_path,
        "2026-11-17",
        [
            event("page_view", "  ", "2026-11-17T10:00:00Z"),
            json.dumps({"event_type": "page_view", "timestamp": "2026-11-17T10:00:00Z"}),
            event("page_view", "C1", "yesterday"),
            json.dumps(
                {
                    "event_type": "page_view",
                    "customer_id": "C1",
                    "timestamp": "2026-11-17T10:00:00Z",
                    "properties": "not an object",
                }
            ),
            event("page_view", "C1", "2026-11-17T10:00:00Z"),
        ],
    )
    events, scan = read_week(tmp_path, START, END, max_malformed_share=1)
    assert sorted(m["line"] for m in scan.malformed) == [1, 2, 3, 4]
    assert events["customer_id"].to_pylist() == ["C1"] and scan.lines == 5


def test_blank_lines_keep_real_line_numbers(tmp_path):
    write(
        tmp_path,
        "2026-11-17",
        [
            "",
            event("page_view", "C1", "2026-11-17T10:00:00Z"),
            "   ",
            event("page_view", "  ", "2026-11-17T10:00:00Z"),
            "{broken",
        ],
    )
    events, scan = read_week(tmp_path, START, END, max_malformed_share=1)
    assert (
        scan.lines == 3 and sorted(m["line"] for m in scan.malformed) == [4, 5] and len(events) == 1
    )


def test_demo_landing_zone_reads_with_only_its_two_broken_lines_per_file(small_source):
    from customer_assets_tests.support.sources import EVENTS

    events, scan = read_week(
        EVENTS["small_source"], START - timedelta(weeks=1), END - timedelta(weeks=1)
    )
    day_files = [m["file"] for m in scan.malformed]
    # the generator breaks exactly two lines of each day file (a truncated line, a non-JSON line)
    assert scan.files > 0 and len(scan.malformed) == 2 * scan.files
    assert all(day_files.count(f) == 2 for f in set(day_files))
    assert set(events["event_type"].unique().to_pylist()) == {
        "page_view",
        "feature_used",
        "purchase_completed",
        "support_chat_started",
    }
    # every line is accounted for: an event of the week, outside the week, an unknown type, or
    # malformed
    assert (
        scan.lines
        == events.num_rows
        + scan.outside_week
        + sum(scan.unknown_types.values())
        + scan.malformed_lines
    )
    assert scan.malformed_lines == len(scan.malformed) and scan.skipped_files == []
    assert events.num_rows > 10 * scan.files


def test_tombstones_bad_utf8_and_stray_carriage_returns_are_malformed_lines(tmp_path, monkeypatch):
    import customer_assets.sources.event_parse as events_module

    # many chunks: a bad line lands at a chunk start
    monkeypatch.setattr(events_module, "CHUNK_BYTES", 200)
    good = event("page_view", "C1", "2026-11-17T10:00:00Z").encode()
    lines = [
        good,
        good,
        b"null",
        good,
        b'{"event_type": "page_view", "customer_id": "C\xff", "timestamp": "2026-11-17T10:00:00Z"}',
        good,
        b"\r",
        good,
        b"[1, 2]",
        good,
    ]
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    (folder / "part.jsonl").write_bytes(b"\r\n".join(lines) + b"\r\n")
    events, scan = read_week(tmp_path, START, END, max_malformed_share=1)
    assert sorted(m["line"] for m in scan.malformed) == [
        3,
        5,
        9,
    ]  # "\r" alone is a blank line, not a line break
    assert events.num_rows == 6 and set(events["customer_id"].to_pylist()) == {"C1"}
    assert scan.lines == 9


def test_a_chunk_with_bad_lines_is_halved_down_to_them(tmp_path, monkeypatch):
    import customer_assets.sources.event_parse as events_module

    # one chunk of 3,000 lines; a failing part is halved down to 1 KiB (about 10 lines), then read
    # line by line
    monkeypatch.setattr(events_module, "SMALL_CHUNK_BYTES", 1024)
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z") for i in range(3000)]
    bad = {
        1: "not json",
        1500: '{"event_type": "page_view", "customer_id": "C1", "timestam',
        1501: event("page_view", "C1", "yesterday"),
        2999: "null",
        3000: event("page_view", " ", "2026-11-17"),
    }
    for number, text in bad.items():
        lines[number - 1] = text
    write(tmp_path, "2026-11-17", lines)
    line_by_line = []
    original = events_module._parse_lines
    monkeypatch.setattr(
        events_module,
        "_parse_lines",
        lambda chunk, *a: line_by_line.append(len(chunk)) or original(chunk, *a),
    )
    events, scan = read_week(tmp_path, START, END)
    assert sorted(m["line"] for m in scan.malformed) == sorted(bad)
    assert events["customer_id"].to_pylist() == [f"C{i}" for i in range(3000) if i + 1 not in bad]
    assert scan.lines == 3000
    # only small parts around the bad lines were read line by line, not the 250 KB chunk
    assert 0 < len(line_by_line) <= 2 * len(bad) and max(line_by_line) <= 1024


@pytest.mark.parametrize(
    "chunk_bytes, small_bytes", [(2 << 20, 64 << 10), (4096, 1024), (200, 100)]
)
def test_a_bad_byte_anywhere_makes_its_line_malformed_however_the_file_is_cut(
    tmp_path, monkeypatch, chunk_bytes, small_bytes
):
    """Invalid UTF-8 in a field the reader never uses (event_id) is a malformed line on the fast
    path too, so which lines are skipped does not depend on the chunk sizes."""
    import customer_assets.sources.event_parse as events_module

    monkeypatch.setattr(events_module, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(events_module, "SMALL_CHUNK_BYTES", small_bytes)
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z").encode() for i in range(4000)]
    lines[0] = b"not json"
    lines[1499] = lines[1499].replace(b'"event_id": "e"', b'"event_id": "\xff"')
    # fine
    lines[2999] = lines[2999].replace(b'"event_id": "e"', '"event_id": "\u00e9t\u00e9"'.encode())
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    (folder / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    events, scan = read_week(tmp_path, START, END)
    assert [m["line"] for m in scan.malformed] == [1, 1500]
    assert events.num_rows == 3998 and scan.lines == 4000


class Warnings:
    """A logger stand-in that keeps what was warned (``context.log`` in the asset)."""

    def __init__(self):
        self.messages = []

    def warning(self, msg, *args):
        self.messages.append(msg % args if args else msg)


def test_gzip_files_give_the_same_events_as_plain_ones(zone, tmp_path):
    plain, plain_scan = read_week(zone, START, END, max_malformed_share=1)
    root = tmp_path / "gzipped"
    for path in zone.glob("dt=*/*.jsonl"):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        (root / path.parent.name / (path.name + ".gz")).write_bytes(
            gzip.compress(path.read_bytes())
        )
    events, scan = read_week(root, START, END, max_malformed_share=1)
    assert events.equals(plain) and aggregate(events).equals(aggregate(plain))
    assert (scan.files, scan.lines, scan.malformed_lines, scan.skipped_files) == (
        3,
        plain_scan.lines,
        2,
        [],
    )
    assert [(Path(m["file"]).name, m["line"]) for m in scan.malformed] == [
        (Path(m["file"]).name + ".gz", m["line"]) for m in plain_scan.malformed
    ]


def test_a_gzip_payload_in_a_jsonl_file_is_decompressed(tmp_path):
    first = [
        event("page_view", "C1", "2026-11-17T10:00:00Z"),
        event("page_view", "C2", "2026-11-17T10:00:00Z"),
    ]
    second = [event("support_chat_started", "C3", "2026-11-18T10:00:00Z")]
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    # two gzip members, as a writer that appends compressed blocks leaves them
    (folder / "part.jsonl").write_bytes(
        gzip.compress(("\n".join(first) + "\n").encode())
        + gzip.compress(("\n".join(second) + "\n").encode())
    )
    events, scan = read_week(tmp_path, START, END)
    assert events["customer_id"].to_pylist() == ["C1", "C2", "C3"]
    assert scan.lines == 3 and scan.malformed_lines == 0 and scan.skipped_files == []


def test_other_compressions_and_suffixes_are_skipped_files_not_malformed_lines(tmp_path):
    good = write(tmp_path, "2026-11-17", [event("page_view", "C1", "2026-11-17T10:00:00Z")])
    folder = good.parent
    zstd = b"\x28\xb5\x2f\xfd" + random.Random(1).randbytes(200)
    (folder / "part.jsonl.zst").write_bytes(zstd)
    # compressed, not renamed: found by its first bytes
    (folder / "renamed.jsonl").write_bytes(zstd)
    (folder / "part.jsonl.snappy").write_bytes(b"\xff\x06\x00\x00sNaPpY" + b"\x00" * 50)
    (folder / "truncated.jsonl.gz").write_bytes(gzip.compress(good.read_bytes() * 100)[:-30])
    (folder / "_SUCCESS").write_bytes(b"")
    warnings = Warnings()
    events, scan = read_week(tmp_path, START, END, log=warnings, max_malformed_share=0)
    reasons = {Path(s["file"]).name: s["reason"] for s in scan.skipped_files}
    assert (
        reasons["part.jsonl.zst"]
        == reasons["renamed.jsonl"]
        == ("compressed with zstd: not supported, decompress it or write .jsonl/.jsonl.gz")
    )
    assert reasons["part.jsonl.snappy"].startswith("compressed with snappy: not supported")
    assert reasons["truncated.jsonl.gz"].startswith("gzip data is truncated or corrupt")
    assert reasons["_SUCCESS"].startswith("not an events file")
    assert scan.files == 1 and scan.lines == 1 and scan.malformed_lines == 0 and len(events) == 1
    assert len(warnings.messages) == 5 and all(
        m.startswith("skipping file ") for m in warnings.messages
    )
    assert scan.summary()["skipped_files"] == scan.skipped_files


def test_a_binary_file_gives_capped_warnings_and_stops_the_week(tmp_path):
    rng = random.Random(7)
    lines = [b"\x00" + rng.randbytes(60).replace(b"\n", b"\x00") for _ in range(5000)]
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    (folder / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    warnings = Warnings()
    with pytest.raises(MalformedEventsError) as raised:
        read_week(tmp_path, START, END, log=warnings)
    assert len(warnings.messages) == 11
    assert all(m.startswith("skipping malformed event ") for m in warnings.messages[:10])
    assert warnings.messages[-1].startswith("4,990 more malformed lines not shown (5,000 in total)")
    message = str(raised.value)
    assert message.startswith(
        "100.0% of the week's event lines are malformed (5,000 of 5,000), above the limit of 5.0%"
    )
    assert message.count("part.jsonl:") == 3 and "raise EVENTS_MAX_MALFORMED_SHARE" in message
    scan = raised.value.scan
    assert scan.malformed_lines == scan.lines == 5000 and len(scan.malformed) == MAX_EXAMPLES


def _four_percent_malformed(root: Path) -> None:
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z") for i in range(100)]
    for number in (10, 40, 70, 100):
        lines[number - 1] = "not json"
    write(root, "2026-11-17", lines, name="part.jsonl")


def test_a_malformed_share_under_the_limit_passes_and_is_counted(tmp_path, caplog):
    _four_percent_malformed(tmp_path)
    with caplog.at_level(logging.WARNING, logger="customer_assets.sources.events"):
        events, scan = read_week(tmp_path, START, END)  # default limit 5%, default logger
    assert len(events) == 96 and scan.summary()["malformed_lines"] == 4
    assert len(caplog.records) == 4
    assert all(
        f"part.jsonl:{n} (invalid JSON" in r.getMessage()
        for n, r in zip((10, 40, 70, 100), caplog.records, strict=False)
    )


def test_a_malformed_share_over_a_lower_limit_stops_the_week(tmp_path):
    _four_percent_malformed(tmp_path)
    with pytest.raises(
        MalformedEventsError, match=r"^4\.0% .* \(4 of 100\), above the limit of 3\.0%"
    ):
        read_week(tmp_path, START, END, max_malformed_share=0.03)


def test_the_malformed_count_is_exact_beyond_the_kept_examples(tmp_path):
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z") for i in range(5000)]
    for number in range(1, 5001, 40):  # 125 malformed lines, 2.5%
        lines[number - 1] = "{broken"
    write(tmp_path, "2026-11-17", lines)
    warnings = Warnings()
    events, scan = read_week(tmp_path, START, END, log=warnings)
    assert scan.summary()["malformed_lines"] == 125 and len(events) == 4875
    assert len(scan.malformed) == MAX_EXAMPLES and len(scan.summary()["malformed_examples"]) == 20
    assert len(warnings.messages) == 11 and warnings.messages[-1].startswith(
        "115 more malformed lines not shown (125 in total)"
    )


@pytest.mark.parametrize("value", ["notjson", '["pv", "page_view"]', '{"pv": 3}'])
def test_bad_event_type_aliases_fail_when_the_resources_load_naming_the_variable(
    monkeypatch, tmp_path, value
):
    """Issue 21, item 16: ``EVENT_TYPE_ALIASES=notjson`` gave a bare JSONDecodeError inside the
    profiles' step."""
    from customer_assets.deployments import resources_for
    from customer_assets.settings import settings_from_env

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EVENT_TYPE_ALIASES", value)
    with pytest.raises(ValueError, match="EVENT_TYPE_ALIASES="):
        settings_from_env()
    with pytest.raises(ValueError, match="EVENT_TYPE_ALIASES="):
        resources_for("local")
    monkeypatch.setenv("EVENT_TYPE_ALIASES", '{"pv": "page_view"}')
    assert settings_from_env().event_aliases() == {"pv": "page_view"}


def test_malformed_examples_name_file_line_field_and_kind_never_the_content(tmp_path):
    """Issue 22: a line with an email in its timestamp was kept (and logged) with the email in its
    error text, and so stored in Dagster's event log."""
    secret = "jane.doe@example.com"
    path = write(
        tmp_path,
        "2026-11-17",
        [
            event("page_view", "C1", secret),  # not a time
            # not text
            json.dumps(
                {
                    "event_type": "page_view",
                    "customer_id": {"email": secret},
                    "timestamp": "2026-11-17T10:00:00Z",
                }
            ),
            json.dumps(
                {
                    "event_type": "page_view",
                    "customer_id": "C1",
                    "timestamp": "2026-11-17T10:00:00Z",
                    "properties": {"amount_usd": secret},
                }
            ),  # not a number
            '{"event_type": "page_view", "customer_id": "' + secret + '", "timestam',  # broken JSON
            json.dumps({"event_type": "page_view", "customer_id": secret}),  # no time
            json.dumps([secret]),  # not an object
            event("page_view", "C1", "2026-11-17T10:00:00Z"),
        ],
    )
    warnings = Warnings()
    with pytest.raises(MalformedEventsError) as raised:
        read_week(tmp_path, START, END, log=warnings)
    scan = raised.value.scan
    kept = {m["line"]: m for m in scan.malformed}
    assert sorted(kept) == [1, 2, 3, 4, 5, 6]
    assert all(m["file"] == str(path) for m in kept.values())
    assert [kept[n]["field"] for n in range(1, 7)] == [
        "timestamp",
        "customer_id",
        "properties.amount_usd",
        None,
        "timestamp",
        None,
    ]
    assert kept[1]["error"] == "not an ISO 8601 time" and kept[4]["error"].startswith(
        "invalid JSON"
    )
    assert kept[6]["error"] == "not a JSON object"
    everything = json.dumps(scan.summary()) + str(raised.value) + "\n".join(warnings.messages)
    assert secret not in everything and "jane" not in everything
