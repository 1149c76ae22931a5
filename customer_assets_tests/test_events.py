"""Reading the landing zone (real files), aggregating, and the sensor that watches it."""

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from customer_assets.sensors import events_landing_zone, new_event_files, weeks_touched
from customer_assets.settings import PipelineSettings
from customer_assets.sources.events import aggregate, read_week

START, END = datetime(2026, 11, 16, tzinfo=timezone.utc), datetime(2026, 11, 23, tzinfo=timezone.utc)


def event(kind, customer, ts, **props):
    return json.dumps({"event_id": "e", "event_type": kind, "customer_id": customer, "timestamp": ts,
                       "properties": props})


def write(root: Path, day: str, lines: list[str], name="customer-events+0+0000000000.jsonl") -> Path:
    folder = root / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def zone(tmp_path):
    root = tmp_path / "events"
    write(root, "2026-11-16", [
        event("page_view", "C1", "2026-11-16T10:00:00Z"),
        event("pageview", " c1 ", "2026-11-16T10:01:00Z"),                   # alias and messy id
        event("feature_used", "C1", "2026-11-16T10:02:00Z", feature="exports"),
        event("feature_used", "C1", "2026-11-16T10:03:00Z", feature="exports"),
        event("feature_used", "C1", "2026-11-16T10:04:00Z", feature="alerts"),
        '{"event_type": "page_view", "customer_id": "C2", "timestam',       # truncated line
        event("purchase_completed", "C2", "2026-11-17T09:00:00+01:00", amount_usd=30.5),
        event("order_completed", "C2", "2026-11-18T09:00:00Z", amount_usd=10.0),
        event("support_chat_started", "C2", "2026-11-18T09:30:00Z"),
        event("newsletter_opened", "C2", "2026-11-18T09:31:00Z"),
    ])
    write(root, "2026-11-15", [event("page_view", "C1", "2026-11-15T23:59:00Z"),   # previous week
                               event("page_view", "C3", "2026-11-16T00:00:30Z")])  # late file, this week
    write(root, "2026-11-23", [event("page_view", "C1", "2026-11-23T00:00:00Z"), "not json"])
    return root


def test_read_week_skips_malformed_lines_with_file_and_line(zone):
    events, scan = read_week(zone, START, END)
    assert scan.files == 3 and len(scan.malformed) == 2
    assert {(Path(m["file"]).parent.name, m["line"]) for m in scan.malformed} == {("dt=2026-11-16", 6),
                                                                                  ("dt=2026-11-23", 2)}
    assert scan.outside_week == 2 and scan.aliased == 2 and scan.unknown_types == {"newsletter_opened": 1}
    assert sorted(events["customer_id"].unique().to_pylist()) == ["C1", "C2", "C3"]


def test_aggregates_per_customer(zone):
    events, _ = read_week(zone, START, END)
    agg = aggregate(events).set_index("customer_id")
    assert agg.loc["C1", ["page_views", "unique_features_used", "purchase_count", "support_interactions"]].tolist() \
        == [2, 2, 0, 0]
    assert agg.loc["C2", "purchase_count"] == 2 and agg.loc["C2", "purchase_amount"] == pytest.approx(40.5)
    assert agg.loc["C2", "support_interactions"] == 1 and agg.loc["C3", "page_views"] == 1


def test_configured_aliases_are_applied(zone):
    events, scan = read_week(zone, START, END, {"newsletter_opened": "page_view"})
    assert scan.unknown_types == {} and events["customer_id"].to_pylist().count("C2") == 4


def test_empty_landing_zone_gives_typed_empty_aggregates(tmp_path):
    events, scan = read_week(tmp_path, START, END)
    agg = aggregate(events)
    assert agg.empty and scan.files == 0 and str(agg["page_views"].dtype) == "int64"


def test_cursor_sees_each_file_once(zone):
    files, cursor = new_event_files(zone, {})
    assert len(files) == 3
    assert new_event_files(zone, cursor) == ([], cursor)
    late = write(zone, "2026-11-19", [event("page_view", "C1", "2026-11-19T08:00:00Z")], name="late.jsonl")
    os.utime(late, ns=(cursor["mtime_ns"] + 1, cursor["mtime_ns"] + 1))
    files, cursor2 = new_event_files(zone, cursor)
    assert files == [late] and cursor2["mtime_ns"] > cursor["mtime_ns"]


def test_weeks_touched_include_the_week_after_a_sunday_folder(zone):
    assert set(weeks_touched(sorted(zone.glob("dt=*/*")))) == {"2026-11-09", "2026-11-16", "2026-11-23"}


def test_sensor_requests_finished_weeks_once(zone):
    settings = PipelineSettings(data_dir="d", reports_dir="r", etl_log_dir="l", events_path=str(zone))
    first = events_landing_zone(dg.build_sensor_context(resources={"settings": settings}))
    keys = sorted(r.partition_key for r in first)
    assert keys == ["2026-11-09", "2026-11-16"]  # 2026-11-23 is not a finished week yet
    assert len({r.run_key for r in first}) == 2
    cursor = json.dumps(new_event_files(zone, {})[1])
    again = events_landing_zone(dg.build_sensor_context(cursor=cursor, resources={"settings": settings}))
    assert isinstance(again, dg.SkipReason)


def test_lines_without_id_type_or_valid_time_are_malformed(tmp_path):
    write(tmp_path, "2026-11-17", [
        event("page_view", "  ", "2026-11-17T10:00:00Z"),
        json.dumps({"event_type": "page_view", "timestamp": "2026-11-17T10:00:00Z"}),
        event("page_view", "C1", "yesterday"),
        json.dumps({"event_type": "page_view", "customer_id": "C1", "timestamp": "2026-11-17T10:00:00Z",
                    "properties": "not an object"}),
        event("page_view", "C1", "2026-11-17T10:00:00Z"),
    ])
    events, scan = read_week(tmp_path, START, END)
    assert sorted(m["line"] for m in scan.malformed) == [1, 2, 3, 4]
    assert events["customer_id"].to_pylist() == ["C1"] and scan.lines == 5


def test_blank_lines_keep_real_line_numbers(tmp_path):
    write(tmp_path, "2026-11-17", ["", event("page_view", "C1", "2026-11-17T10:00:00Z"), "   ",
                                   event("page_view", "  ", "2026-11-17T10:00:00Z"), "{broken"])
    events, scan = read_week(tmp_path, START, END)
    assert scan.lines == 3 and sorted(m["line"] for m in scan.malformed) == [4, 5] and len(events) == 1


def test_demo_landing_zone_reads_with_only_its_two_broken_lines_per_file(small_source):
    from customer_assets_tests.conftest import EVENTS

    events, scan = read_week(EVENTS["small_source"], START - timedelta(weeks=1), END - timedelta(weeks=1))
    day_files = [m["file"] for m in scan.malformed]
    # the generator breaks exactly two lines of each day file (a truncated line, a non-JSON line)
    assert scan.files > 0 and len(scan.malformed) == 2 * scan.files
    assert all(day_files.count(f) == 2 for f in set(day_files))
    assert set(events["event_type"].unique().to_pylist()) == {
        "page_view", "feature_used", "purchase_completed", "support_chat_started"}
    # every line is accounted for: an event of the week, outside the week, an unknown type, or malformed
    assert scan.lines == events.num_rows + scan.outside_week + sum(scan.unknown_types.values()) + len(scan.malformed)
    assert events.num_rows > 10 * scan.files


def test_tombstones_bad_utf8_and_stray_carriage_returns_are_malformed_lines(tmp_path, monkeypatch):
    import customer_assets.sources.events as events_module

    monkeypatch.setattr(events_module, "CHUNK_BYTES", 200)  # many chunks: a bad line lands at a chunk start
    good = event("page_view", "C1", "2026-11-17T10:00:00Z").encode()
    lines = [good, good, b"null", good, b'{"event_type": "page_view", "customer_id": "C\xff", '
             b'"timestamp": "2026-11-17T10:00:00Z"}', good, b"\r", good, b"[1, 2]", good]
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    (folder / "part.jsonl").write_bytes(b"\r\n".join(lines) + b"\r\n")
    events, scan = read_week(tmp_path, START, END)
    assert sorted(m["line"] for m in scan.malformed) == [3, 5, 9]  # "\r" alone is a blank line, not a line break
    assert events.num_rows == 6 and set(events["customer_id"].to_pylist()) == {"C1"}
    assert scan.lines == 9


def test_a_chunk_with_bad_lines_is_halved_down_to_them(tmp_path, monkeypatch):
    import customer_assets.sources.events as events_module

    # one chunk of 3,000 lines; a failing part is halved down to 1 KiB (about 10 lines), then read line by line
    monkeypatch.setattr(events_module, "SMALL_CHUNK_BYTES", 1024)
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z") for i in range(3000)]
    bad = {1: "not json", 1500: '{"event_type": "page_view", "customer_id": "C1", "timestam',
           1501: event("page_view", "C1", "yesterday"), 2999: "null", 3000: event("page_view", " ", "2026-11-17")}
    for number, text in bad.items():
        lines[number - 1] = text
    write(tmp_path, "2026-11-17", lines)
    line_by_line = []
    original = events_module._parse_lines
    monkeypatch.setattr(events_module, "_parse_lines",
                        lambda chunk, *a: line_by_line.append(len(chunk)) or original(chunk, *a))
    events, scan = read_week(tmp_path, START, END)
    assert sorted(m["line"] for m in scan.malformed) == sorted(bad)
    assert events["customer_id"].to_pylist() == [f"C{i}" for i in range(3000) if i + 1 not in bad]
    assert scan.lines == 3000
    # only small parts around the bad lines were read line by line, not the 250 KB chunk
    assert 0 < len(line_by_line) <= 2 * len(bad) and max(line_by_line) <= 1024


@pytest.mark.parametrize("chunk_bytes, small_bytes", [(2 << 20, 64 << 10), (4096, 1024), (200, 100)])
def test_a_bad_byte_anywhere_makes_its_line_malformed_however_the_file_is_cut(tmp_path, monkeypatch, chunk_bytes,
                                                                              small_bytes):
    """Invalid UTF-8 in a field the reader never uses (event_id) is a malformed line on the fast path too, so
    which lines are skipped does not depend on the chunk sizes."""
    import customer_assets.sources.events as events_module

    monkeypatch.setattr(events_module, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(events_module, "SMALL_CHUNK_BYTES", small_bytes)
    lines = [event("page_view", f"C{i}", "2026-11-17T10:00:00Z").encode() for i in range(4000)]
    lines[0] = b"not json"
    lines[1499] = lines[1499].replace(b'"event_id": "e"', b'"event_id": "\xff"')
    lines[2999] = lines[2999].replace(b'"event_id": "e"', "\"event_id\": \"\u00e9t\u00e9\"".encode())  # fine
    folder = tmp_path / "dt=2026-11-17"
    folder.mkdir()
    (folder / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    events, scan = read_week(tmp_path, START, END)
    assert [m["line"] for m in scan.malformed] == [1, 1500]
    assert events.num_rows == 3998 and scan.lines == 4000
