"""The ECB rates refresh against a loopback HTTP server: a fresh file, a broken one, a stale one,
none at all; the ``EcbRates`` resource naming the file each step converts with (pinned, held or
shipped), in a process of its own; and a week of the graph converted with what it got, its warning
check passing or firing."""

from __future__ import annotations

import http.server
import io
import json
import socket
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from customer_assets.logic import currency
from customer_assets.resources.rates import EcbRates
from customer_assets.sources import ecb_rates

WEEK = "2026-11-16"
SHIPPED_LAST = currency.last_rate_date(currency.CURRENCY_FILE)


def ecb_zip(last_day: date | None = None, until: date | None = None) -> bytes:
    """An ECB-format history zip: the shipped file's rows (those to ``until``), with a row for
    ``last_day`` (the newest row's rates) on top, as the ECB lists the newest day first."""
    with zipfile.ZipFile(currency.CURRENCY_FILE) as archive:
        lines = archive.read(archive.namelist()[0]).decode().splitlines()
    header, rows = (
        lines[0],
        [row for row in lines[1:] if until is None or row[:10] <= until.isoformat()],
    )
    if last_day is not None:
        rows = [last_day.isoformat() + rows[0][rows[0].index(",") :], *rows]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("eurofxref-hist.csv", "\n".join([header, *rows]) + "\n")
    return buffer.getvalue()


class RatesServer:
    """What the loopback server answers (``body``, ``status``) and how many requests it had."""

    def __init__(self, body: bytes = b"", status: int = 200):
        self.body, self.status, self.requests = body, status, 0


@contextmanager
def serving(rates: RatesServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            rates.requests += 1
            self.send_response(rates.status)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(rates.body)))
            self.end_headers()
            self.wfile.write(rates.body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stats/eurofxref/eurofxref-hist.zip"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL where no server listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/eurofxref-hist.zip"


def leftovers(data_dir: Path) -> list[str]:
    """Temporary files of a download or a swap left in the rates folder."""
    return [
        p.name
        for p in ecb_rates.rates_dir(data_dir).iterdir()
        if p.name.endswith((".tmp", ".download"))
    ]


def test_a_fresh_file_is_fetched_checked_and_kept(tmp_path):
    rates = RatesServer(ecb_zip(date(2026, 11, 20)))
    with serving(rates) as url:
        used = ecb_rates.refresh_rates(tmp_path, url)
    held = ecb_rates.held_rates_file(tmp_path)
    assert used.origin == "fetched" and used.path == str(held) and not used.failed
    assert used.last_rate_date == date(2026, 11, 20) and "fetched" in used.reason
    assert currency.last_rate_date(str(held)) == date(2026, 11, 20) and leftovers(tmp_path) == []


def test_the_file_is_fetched_at_most_once_a_day(tmp_path):
    rates = RatesServer(ecb_zip(date(2026, 11, 20)))
    start = datetime(2026, 11, 23, 6, tzinfo=timezone.utc)
    with serving(rates) as url:
        first = ecb_rates.refresh_rates(tmp_path, url, now=start)
        again = ecb_rates.refresh_rates(tmp_path, url, now=start + timedelta(hours=20))
        assert rates.requests == 1
        assert again.origin == "held" and again.last_rate_date == date(2026, 11, 20)
        assert again.reason.startswith("not fetched") and not again.failed
        rates.body = ecb_zip(date(2026, 11, 23))
        next_day = ecb_rates.refresh_rates(tmp_path, url, now=start + timedelta(days=1))
    assert first.origin == "fetched" and rates.requests == 2
    assert next_day.origin == "fetched" and next_day.last_rate_date == date(2026, 11, 23)


def test_a_broken_zip_is_refused_and_the_newest_good_copy_used(tmp_path):
    start = datetime(2026, 11, 23, 6, tzinfo=timezone.utc)
    rates = RatesServer(ecb_zip(date(2026, 11, 20)))
    with serving(rates) as url:
        ecb_rates.refresh_rates(tmp_path, url, now=start - timedelta(days=1))  # a good copy held
        rates.body = ecb_zip(date(2026, 11, 23))[:2000]  # cut short: not a zip any more
        broken = ecb_rates.refresh_rates(tmp_path, url, now=start)
    assert broken.origin == "held" and broken.failed and broken.last_rate_date == date(2026, 11, 20)
    assert "did not give the ECB's rates file" in broken.reason
    assert currency.last_rate_date(str(ecb_rates.held_rates_file(tmp_path))) == date(2026, 11, 20)
    assert leftovers(tmp_path) == []


def test_a_broken_zip_without_a_held_copy_falls_back_to_the_shipped_file(tmp_path):
    with serving(RatesServer(b"<html>maintenance</html>")) as url:
        used = ecb_rates.refresh_rates(tmp_path, url)
    assert used.origin == "shipped" and used.path == currency.CURRENCY_FILE and used.failed
    assert not ecb_rates.held_rates_file(tmp_path).exists()


def test_a_file_older_than_the_copy_held_is_refused(tmp_path):
    """A mirror or cache that serves last month's file must not replace a newer copy."""
    with serving(RatesServer(ecb_zip(until=SHIPPED_LAST - timedelta(days=30)))) as url:
        used = ecb_rates.refresh_rates(tmp_path, url)
    assert used.origin == "shipped" and used.failed and "before the copy in use" in used.reason
    assert leftovers(tmp_path) == []


def test_a_server_that_is_down_or_answers_an_error_leaves_the_rates_as_they_were(tmp_path):
    start = datetime(2026, 11, 23, 6, tzinfo=timezone.utc)
    with serving(RatesServer(ecb_zip(date(2026, 11, 20)))) as url:
        ecb_rates.refresh_rates(tmp_path, url, now=start - timedelta(days=1))
    down = ecb_rates.refresh_rates(tmp_path, closed_port_url(), now=start)
    assert down.origin == "held" and down.failed and "ConnectionError" in down.reason
    with serving(RatesServer(b"busy", status=503)) as url:
        error = ecb_rates.refresh_rates(tmp_path / "other", url, now=start)
    assert error.origin == "shipped" and error.failed and "503" in error.reason
    # Later the same day the failure is still the reason, without another attempt.
    again = ecb_rates.refresh_rates(tmp_path, closed_port_url(), now=start + timedelta(hours=1))
    assert again.failed and again.origin == "held"


def test_a_pinned_file_is_used_without_a_fetch(tmp_path):
    pinned = tmp_path / "pinned.zip"
    pinned.write_bytes(ecb_zip(date(2026, 11, 20)))
    rates = RatesServer(ecb_zip(date(2026, 11, 27)))
    with serving(rates) as url:
        resource = EcbRates(data_dir=str(tmp_path), url=url, pinned_file=str(pinned))
        used = resource.refresh()
        assert resource.in_use() == str(pinned)
    assert rates.requests == 0 and used.origin == "pinned" and used.path == str(pinned)
    assert used.last_rate_date == date(2026, 11, 20)
    assert not ecb_rates.rates_dir(tmp_path).exists()


def test_the_other_steps_use_the_newest_good_file_already_there_without_a_fetch(tmp_path):
    """``in_use``: the shipped file until a refresh kept a copy, then that copy; never a request."""
    rates = RatesServer(ecb_zip(date(2026, 11, 20)))
    with serving(rates) as url:
        resource = EcbRates(data_dir=str(tmp_path), url=url)
        assert resource.in_use() == currency.CURRENCY_FILE and rates.requests == 0
        refreshed = resource.refresh()
        assert rates.requests == 1
        assert resource.in_use() == refreshed.path == str(ecb_rates.held_rates_file(tmp_path))
        assert rates.requests == 1
    assert refreshed.origin == "fetched"


# A step's process: the rates resource from its configuration alone, nothing set at import.
STEP = """
import json, sys
import pandas as pd
from customer_assets.logic.currency import convert_to_usd
from customer_assets.resources.rates import EcbRates

rates = EcbRates(**json.loads(sys.argv[1]))
ts = pd.Series([pd.Timestamp("2026-11-20 12:00", tz="UTC")])
out = convert_to_usd(pd.Series([100.0]), pd.Series(["GBP"]), ts, rates.in_use())
print(json.dumps([rates.in_use(), float(out["amount_usd"].iloc[0])]))
"""


def _step_process(**config) -> tuple[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", STEP, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    path, usd = json.loads(done.stdout.splitlines()[-1])
    return path, usd


def test_a_step_process_converts_with_the_pinned_file_or_the_newest_under_the_data_dir(tmp_path):
    """Each step of the multiprocess executor is a process of its own: it converts with the file
    its ``rates`` resource names (no module global, no fetch), so two files give two amounts."""
    dearer = tmp_path / "dearer.zip"
    with zipfile.ZipFile(currency.CURRENCY_FILE) as archive:
        lines = archive.read(archive.namelist()[0]).decode().splitlines()
    header, newest = lines[0].split(","), lines[1].split(",")
    gbp = header.index("GBP")
    newest[0], newest[gbp] = (
        "2026-11-20",
        str(float(newest[gbp]) / 2),
    )  # a pound worth twice as much
    with zipfile.ZipFile(dearer, "w") as archive:
        archive.writestr("eurofxref-hist.csv", "\n".join([lines[0], ",".join(newest), *lines[1:]]))
    data_dir = tmp_path / "data"
    shipped_path, shipped = _step_process(data_dir=str(data_dir))
    pinned_path, pinned = _step_process(data_dir=str(data_dir), pinned_file=str(dearer))
    assert shipped_path == currency.CURRENCY_FILE and pinned_path == str(dearer)
    assert pinned == pytest.approx(2 * shipped)
    held = ecb_rates.held_rates_file(data_dir)
    held.parent.mkdir(parents=True)
    held.write_bytes(dearer.read_bytes())  # as a refresh leaves it
    held_path, from_held = _step_process(data_dir=str(data_dir))
    assert held_path == str(held) and from_held == pytest.approx(pinned)


def _fx_check(result: dg.ExecuteInProcessResult):
    return next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "fx_rates_cover_week"
    )


def _validated_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {
        k: v.value
        for k, v in result.asset_materializations_for_node("validate_transactions")[
            0
        ].metadata.items()
    }


def test_a_week_converted_with_fetched_rates_passes_the_coverage_check(
    pipeline_env, small_source, monkeypatch
):
    from customer_assets_tests.support.pipeline import run_week

    tmp = pipeline_env("small_source")
    with serving(RatesServer(ecb_zip(date(2026, 11, 20)))) as url:
        monkeypatch.setenv("ECB_RATES_URL", url)
        monkeypatch.delenv("ECB_RATES_FILE", raising=False)
        result = run_week(WEEK, selection=dg.AssetSelection.groups("extract", "quality"))
    metadata = _validated_metadata(result)
    assert (
        metadata["fx_rates_origin"] == "fetched" and metadata["fx_rates_last_date"] == "2026-11-20"
    )
    assert metadata["fx_rates_refresh_failed"] is False
    check = _fx_check(result)
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert Path(metadata["fx_rates_file"]) == ecb_rates.held_rates_file(tmp / "data")


def test_a_week_after_the_rates_end_warns_and_says_why_the_refresh_failed(
    pipeline_env, small_source, monkeypatch
):
    from customer_assets_tests.support.pipeline import run_week

    pipeline_env("small_source")
    monkeypatch.setenv("ECB_RATES_URL", closed_port_url())
    monkeypatch.delenv("ECB_RATES_FILE", raising=False)
    result = run_week(WEEK, selection=dg.AssetSelection.groups("extract", "quality"))
    assert result.success  # a warning: the week goes on, at the last published rates
    metadata = _validated_metadata(result)
    assert metadata["fx_rates_origin"] == "shipped" and metadata["fx_rates_refresh_failed"] is True
    assert "ConnectionError" in metadata["fx_rates_refresh"]
    check = _fx_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert SHIPPED_LAST.isoformat() in check.metadata["result"].value
