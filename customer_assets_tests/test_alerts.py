"""Issue 13: alerts to a Slack-compatible webhook (a loopback HTTP server), volume and quality
bands, freshness misses, and checks recorded per week."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from customer_assets import freshness
from customer_assets.alerts import Alerts
from customer_assets.freshness import freshness_alerts, missed_week
from customer_assets.logic.checks import trailing_band, within_band
from customer_assets_tests.support.pipeline import run_week

WEEK = "2026-11-16"
TRANSACTIONS = dg.AssetKey(["customer_analytics", "weekly_transactions"])
SALES = dg.AssetKey(["customer_analytics", "mart_weekly_sales"])


@pytest.fixture
def webhook():
    """A loopback webhook that keeps every JSON body it receives; yields (url, received)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/slack", received
    server.shutdown()


def test_band_warns_outside_mean_3_sigma_and_on_zero():
    previous = [100.0, 104.0, 96.0, 101.0, 99.0, 100.0, 103.0, 97.0]
    band = trailing_band(previous)
    assert band.weeks == 8 and band.low < 95 and band.high > 105
    assert within_band("rows", 100, previous).passed
    assert not within_band("rows", 150, previous).passed
    zero = within_band("rows", 0, previous)
    assert not zero.passed and "zero while" in zero.description
    assert within_band("rows", 5000, [100.0, 90.0]).passed  # fewer than 3 weeks: no band yet


def test_a_failed_run_and_its_failed_blocking_check_post_alerts(
    pipeline_env, small_source, monkeypatch, webhook
):
    url, received = webhook
    pipeline_env("small_source", events=False)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("QUALITY_FAIL_RATE", "0.0001")  # every week now "looks broken"
    result = run_week(WEEK, raise_on_error=False)
    assert not result.success
    kinds = [m["customer_assets"]["kind"] for m in received]
    assert kinds.count("check_failed") == 1 and kinds.count("run_failed") == 1
    check = next(m for m in received if m["customer_assets"]["kind"] == "check_failed")
    assert "quarantine_rate" in check["text"] and check["customer_assets"]["week"] == WEEK
    assert all(isinstance(m["text"], str) and m["text"] for m in received)  # what Slack shows
    assert url not in json.dumps(received)  # the secret URL is never in a message


def test_volume_out_of_its_band_warns_per_week_and_alerts(
    pipeline_env, small_source, monkeypatch, webhook
):
    """The week's row count against the 8 loaded weeks before it (reported here ten times
    larger)."""
    url, received = webhook
    pipeline_env("small_source", events=False)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    instance = dg.DagsterInstance.ephemeral()
    for i, week in enumerate(
        [
            "2026-09-21",
            "2026-09-28",
            "2026-10-05",
            "2026-10-12",
            "2026-10-19",
            "2026-10-26",
            "2026-11-02",
            "2026-11-09",
        ]
    ):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=TRANSACTIONS,
                partition=week,
                metadata={"dagster/row_count": 12000 + 100 * (i % 3)},
            )
        )
        # and revenue a thousand times the week's: a check of a mart, which runs late in the week
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=SALES, partition=week, metadata={"revenue_usd": 1e9 + 1e6 * (i % 3)}
            )
        )
    result = run_week(WEEK, instance=instance)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["transaction_ids_unique"].passed and evaluations["loaded_rows_match"].passed
    volume = evaluations["weekly_volume"]
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.WARN
    assert "outside the band" in volume.metadata["result"].value
    # each check is recorded for its week
    assert all(e.partition == WEEK for e in evaluations.values())
    revenue = evaluations["revenue_usd_band"]
    assert not revenue.passed and revenue.severity == dg.AssetCheckSeverity.WARN
    # The warnings, then the week's report (issue 23), which counts both: the summary waits for
    # every check of the week.
    kinds = [m["customer_assets"]["kind"] for m in received]
    assert kinds == ["out_of_band", "out_of_band", "week_succeeded"]
    assert {"weekly_volume", "revenue_usd_band"} == {
        name
        for m in received[:2]
        for name in ("weekly_volume", "revenue_usd_band")
        if name in m["text"]
    }
    assert set(received[2]["customer_assets"]["details"]["warning_checks"]) >= {
        "customer_analytics/weekly_transactions:weekly_volume",
        "customer_analytics/mart_weekly_sales:revenue_usd_band",
    }
    # The loaded table's columns carry the pandera model's descriptions (issue 13, item 5).
    load = result.asset_materializations_for_node("customer_analytics__weekly_transactions")[0]
    columns = {c.name: c.description for c in load.metadata["dagster/column_schema"].value.columns}
    assert "ECB reference rate" in columns["amount_usd"] and columns["week_start"]
    assert load.metadata["dagster/table_name"].value == "customer_analytics.weekly_transactions"
    assert load.metadata["dagster/uri"].value.startswith("duckdb:///")


def test_a_missed_week_alerts_once(webhook, monkeypatch):
    """The sensor alerts once for a week missing past its deadline. Its clock is set: on the real
    one, between Monday 00:00 and 06:00 UTC the last complete week is not yet due, and this test
    failed whenever it ran then."""
    url, received = webhook
    instance = dg.DagsterInstance.ephemeral()
    now = datetime(2026, 11, 23, 7, 0, tzinfo=timezone.utc)  # Monday 07:00: week 2026-11-16 is due
    assert missed_week(instance, now) == WEEK
    assert missed_week(instance, now.replace(hour=5)) is None  # before the deadline
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=TRANSACTIONS, partition=WEEK)
    )
    assert missed_week(instance, now) is None

    late = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=late, resources={"alerts": Alerts(webhook_url=url)})
    monkeypatch.setattr(freshness, "utc_now", lambda: now.replace(hour=5))
    assert isinstance(freshness_alerts(context), dg.SkipReason) and not received  # not yet due
    # past its deadline, not loaded
    monkeypatch.setattr(freshness, "utc_now", lambda: now)
    freshness_alerts(context)
    assert [m["customer_assets"]["kind"] for m in received] == ["freshness_missed"]
    again = dg.build_sensor_context(
        instance=late, cursor=context.cursor, resources={"alerts": Alerts(webhook_url=url)}
    )
    assert isinstance(freshness_alerts(again), dg.SkipReason) and len(received) == 1


def test_an_unreachable_webhook_never_fails_the_pipeline():
    assert (
        Alerts(webhook_url="http://127.0.0.1:9/nothing", timeout_seconds=1).send("run_failed", "x")
        is False
    )


def test_a_successful_cli_week_posts_its_report(
    pipeline_env, small_source, monkeypatch, webhook, tmp_path
):
    """Issue 23, item 3: seeds 000 and 001 end a week with a report; only failures were posted."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url, received = webhook
    tmp = pipeline_env("small_source", events=False)
    (tmp / "home").mkdir()
    env = {
        **os.environ,
        "ALERT_WEBHOOK_URL": url,
        "DAGSTER_WEBSERVER_URL": "http://dagster.internal:3000",
        "DAGSTER_HOME": str(tmp / "home"),
    }
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
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = [
        r["customer_assets"] for r in received if r["customer_assets"]["kind"] == "week_succeeded"
    ]
    details = report["details"]
    summary = json.loads(next((tmp / "logs" / "etl").glob("etl_*.json")).read_text())
    assert details == summary["report"] and report["week"] == WEEK
    assert details["rows_extracted"] == summary["records_processed"] > 1000
    assert details["rows_loaded"] + details["rows_quarantined"] == details["rows_extracted"]
    assert details["anomalies"] == summary["records_flagged"] and details["new_customers"] > 0
    assert 0 < details["quality_score"] <= 100 and details["cleanup_confirmed"] is True
    assert details["warnings"] == len(details["warning_checks"])
    assert "customer_analytics.weekly_transactions" in details["table"]
    assert details["run_url"] == f"http://dagster.internal:3000/runs/{summary['run_id']}"


def test_a_report_that_cannot_be_posted_never_fails_the_week_or_its_cleanup(
    pipeline_env, small_source, monkeypatch
):
    tmp = pipeline_env("small_source", events=False)
    # the discard port: refused
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unreachable")
    result = run_week(WEEK)
    assert result.success
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]
    summary = json.loads(next((tmp / "logs" / "etl").glob("etl_*.json")).read_text())
    assert summary["report"]["cleanup_confirmed"] is True
