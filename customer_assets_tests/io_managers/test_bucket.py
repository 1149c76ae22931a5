"""The intermediates in a bucket (CUSTOMER_ASSETS_INTERMEDIATES_URL=gs://bucket/prefix), for runs
that do not share a disk: the same IO manager and cleanup as on the local disk, through pyarrow's
real GCS client talking to a GCS emulator (the gcp-storage-emulator package of the dev extra,
started here on a free loopback port)."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from customer_assets.cleanup.claims import sweep_orphans
from customer_assets.cleanup.intermediates import intermediate_files, remove_intermediates
from customer_assets.deployments import resources_for
from customer_assets.frames import FrameBatches, StoredFrame
from customer_assets.io_managers.intermediate_root import IntermediateRoot
from customer_assets.io_managers.parquet import ParquetIOManager
from customer_assets.settings import PipelineSettings, settings_from_env

BUCKET = "customer-assets-intermediates"
KEY = dg.AssetKey(["etl", "frame"])
REPORT = dg.AssetKey(["etl", "report"])
WEEK, OTHER_WEEK = "2026-11-16", "2026-11-09"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory) -> str:
    """host:port of a GCS emulator holding the bucket BUCKET (in memory), stopped after the
    module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    argv = [
        str(Path(sys.executable).with_name("gcp-storage-emulator")),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--default-bucket",
        BUCKET,
        "--in-memory",
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        fs = IntermediateRoot(f"gs://{BUCKET}", host).fs
        while fs.get_file_info(BUCKET).type != pafs.FileType.Directory:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield host
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the session we started
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # a client's keep-alive connection can hold it past SIGTERM; it keeps its objects in
            # memory only, so nothing is lost
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.fixture
def bucket_url() -> str:
    """A prefix of its own in the bucket, for each test."""
    return f"gs://{BUCKET}/runs-{uuid.uuid4().hex[:8]}"


def _objects(host: str, url: str) -> list[str]:
    """Every object under the URL's prefix, relative to it."""
    root = IntermediateRoot(url, host)
    return [p.removeprefix(root.path() + "/") for p in root.files(recursive=True)]


def _manager(tmp_path: Path, url: str, host: str) -> ParquetIOManager:
    return ParquetIOManager(settings=_settings(tmp_path, url, host))


def _out(key=KEY, week=WEEK):
    return dg.build_output_context(asset_key=key, partition_key=week, run_id="run-" + week)


def _in(key=KEY, week=WEEK, stored=False):
    typed = (
        {
            "dagster_type": dg.DagsterType(
                type_check_fn=lambda _c, _v: True, name="Stored", typing_type=StoredFrame
            )
        }
        if stored
        else {}
    )
    return dg.build_input_context(asset_key=key, partition_key=week, **typed)


def _frame(rows: int) -> pd.DataFrame:
    """Arrow-backed strings (inferred and explicit), nulls of every kind, UTC timestamps."""
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(
                [f"C{i:04d}" if i % 3 else None for i in range(rows)], dtype="str"
            ),
            "email_hash": pd.array(
                [f"h{i}" if i % 2 else None for i in range(rows)], dtype="string[pyarrow]"
            ),
            "amount": np.array(
                [float(i) * 1.5 if i % 4 else np.nan for i in range(rows)], dtype="float64"
            ),
            "quantity": pd.array([i if i % 5 else None for i in range(rows)], dtype="Int64"),
            "at": pd.Series(pd.date_range("2026-11-16", periods=rows, freq="h", tz="UTC")).where(
                [bool(i % 6) for i in range(rows)]
            ),
        }
    )
    return frame


@pytest.mark.parametrize("rows", [0, 1, 500])
def test_frames_round_trip_through_the_bucket(tmp_path, gcs_emulator, bucket_url, rows):
    manager = _manager(tmp_path, bucket_url, gcs_emulator)
    frame = _frame(rows)
    context = _out()
    manager.handle_output(context, frame)
    assert f"etl/frame/{WEEK}.parquet" in _objects(gcs_emulator, bucket_url)
    assert not list((tmp_path / "data").rglob(f"{WEEK}.*"))  # the staged file went with the upload
    where = context.get_logged_metadata()["intermediate"].text
    assert where.startswith(f"{bucket_url}/etl/frame/{WEEK}.parquet")

    back = manager.load_input(_in())
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)  # every value and null, in order
    assert back["customer_id"].dtype == "str" and str(back["at"].dtype) == "datetime64[ns, UTC]"
    # Exactly what the same frame gives back on the local disk (dtypes included): one code path.
    local = ParquetIOManager(settings=_settings(tmp_path / "local", None, None))
    local.handle_output(_out(), frame)
    pd.testing.assert_frame_equal(back, local.load_input(_in()))


def test_batches_are_read_from_a_local_copy_that_goes_with_the_week(
    tmp_path, gcs_emulator, bucket_url
):
    manager = _manager(tmp_path, bucket_url, gcs_emulator)
    parts = [
        _frame(7),
        _frame(7).assign(customer_id=lambda f: f["customer_id"] + "b"),
        _frame(3).iloc[:0],
    ]
    manager.handle_output(_out(), FrameBatches(iter(parts)))
    stored = manager.load_input(_in(stored=True))
    assert isinstance(stored, StoredFrame) and len(stored) == 14
    assert stored.path.parent == tmp_path / "data" / "etl" / "frame"
    assert stored.path.name.startswith(f"{WEEK}.")
    pd.testing.assert_frame_equal(
        pd.concat(list(stored.batches(batch_rows=5)), ignore_index=True),
        pd.concat(parts[:2], ignore_index=True),
        check_dtype=False,
    )

    settings = _settings(tmp_path, bucket_url, gcs_emulator)
    assert {str(f) for f in intermediate_files(settings, WEEK)} == {
        str(stored.path),
        f"{bucket_url}/etl/frame/{WEEK}.parquet",
    }
    remove_intermediates(settings, WEEK, [KEY])
    assert not stored.path.exists() and intermediate_files(settings, WEEK) == []


def test_a_report_round_trips_as_json(tmp_path, gcs_emulator, bucket_url):
    manager = _manager(tmp_path, bucket_url, gcs_emulator)
    report = {
        "week": WEEK,
        "passed": 12,
        "rate": 0.25,
        "reasons": {"AMOUNT_ABOVE_CEILING": 1},
        "none": None,
    }
    manager.handle_output(_out(REPORT), report)
    assert f"etl/report/{WEEK}.json" in _objects(gcs_emulator, bucket_url)
    assert manager.load_input(_in(REPORT)) == report


def _settings(tmp_path: Path, url: str | None, host: str | None) -> PipelineSettings:
    return PipelineSettings(
        data_dir=str(tmp_path / "data"),
        reports_dir=str(tmp_path / "reports"),
        etl_log_dir=str(tmp_path / "logs"),
        intermediates_url=url,
        storage_emulator_host=host,
    )


def test_the_weeks_cleanup_leaves_no_object_of_that_week(tmp_path, gcs_emulator, bucket_url):
    manager = _manager(tmp_path, bucket_url, gcs_emulator)
    for week in (WEEK, OTHER_WEEK):
        manager.handle_output(_out(KEY, week), _frame(20))
        manager.handle_output(_out(REPORT, week), {"week": week})
    manager.load_input(_in(KEY, WEEK, stored=True))  # a local copy too
    anomalies = tmp_path / "reports" / WEEK / "anomalies.csv"
    anomalies.parent.mkdir(parents=True)
    anomalies.write_text("customer_id\nC0001\n")
    assert {o for o in _objects(gcs_emulator, bucket_url) if o.startswith(".run_claims/")} == {
        f".run_claims/{WEEK}/run-{WEEK}.json",
        f".run_claims/{OTHER_WEEK}/run-{OTHER_WEEK}.json",
    }

    removed, remaining = remove_intermediates(_settings(tmp_path, bucket_url, gcs_emulator), WEEK)
    assert remaining == [] and str(anomalies) in removed
    assert f"{bucket_url}/etl/frame/{WEEK}.parquet" in removed
    left = _objects(gcs_emulator, bucket_url)
    assert not [o for o in left if o.startswith("etl/") and WEEK in o]
    assert sorted(o for o in left if o.startswith("etl/")) == [
        f"etl/frame/{OTHER_WEEK}.parquet",
        f"etl/report/{OTHER_WEEK}.json",
    ]
    assert not list((tmp_path / "data").rglob(f"{WEEK}.*")) and not anomalies.exists()


def test_a_week_that_no_live_run_claims_is_swept_from_the_bucket(
    tmp_path, gcs_emulator, bucket_url
):
    """A run killed outright: its claim names a process that is gone; the sweep of the next run
    (another pod, or the sensor) finds the week in the bucket and removes it."""
    manager = _manager(tmp_path, bucket_url, gcs_emulator)
    manager.handle_output(_out(KEY, WEEK), _frame(5))
    settings = _settings(tmp_path, bucket_url, gcs_emulator)
    _kill_claim(IntermediateRoot(bucket_url, gcs_emulator), WEEK)

    swept = sweep_orphans(settings)
    assert list(swept) == [WEEK] and _objects(gcs_emulator, bucket_url) == []
    assert list((tmp_path / "logs").glob("failed_*.json"))


def _kill_claim(root: IntermediateRoot, week: str) -> None:
    """Make the week's claim name a process that is gone: its run was killed outright."""
    claim = root.path(".run_claims", week, f"run-{week}.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root.write_text(
        claim, root.read_text(claim).replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}')
    )


def test_an_erasure_removes_a_weeks_intermediates_from_the_bucket(
    pipeline_env, small_source, gcs_emulator, bucket_url, monkeypatch
):
    """A run killed outright left a week's intermediates (customer rows) in the bucket and a copy
    on the disk: the erasure finds them through the cleanup's listing and removes them, and records
    it. A week a live run claims is left to that run (it removes them when it ends)."""
    from customer_assets_tests.test_erasure_key import erase

    tmp = pipeline_env("small_source")
    monkeypatch.setenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", bucket_url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    manager = _manager(tmp, bucket_url, gcs_emulator)
    for week in (WEEK, OTHER_WEEK):
        manager.handle_output(_out(KEY, week), _frame(20))
    manager.handle_output(_out(REPORT, WEEK), {"week": WEEK})
    copy = manager.load_input(_in(KEY, WEEK, stored=True)).path  # read in batches: a local copy
    _kill_claim(IntermediateRoot(bucket_url, gcs_emulator), WEEK)

    assert erase("C0001", tmp, request="DSR-BUCKET").success

    left = _objects(gcs_emulator, bucket_url)
    assert not [o for o in left if WEEK in o], left  # the intermediates and the dead run's claim
    assert sorted(left) == [
        f".run_claims/{OTHER_WEEK}/run-{OTHER_WEEK}.json",
        f"etl/frame/{OTHER_WEEK}.parquet",
    ]
    assert not copy.exists() and not list((tmp / "data").rglob(f"{WEEK}.*"))
    logs = tmp / "logs" / "etl"
    record = json.loads(next(logs.glob("erasure_*.json")).read_text())
    assert list(record["intermediates_removed"]) == [WEEK]
    assert {
        f"{bucket_url}/etl/frame/{WEEK}.parquet",
        f"{bucket_url}/etl/report/{WEEK}.json",
        str(copy),
    } <= set(record["intermediates_removed"][WEEK])
    failed = json.loads(next(logs.glob("failed_*.json")).read_text())
    assert (failed["recorded_by"], failed["week_start"]) == ("orphan sweep", WEEK)


def test_a_missing_bucket_fails_the_step_saying_so(tmp_path, gcs_emulator):
    manager = _manager(tmp_path, "gs://no-such-bucket/intermediates", gcs_emulator)
    with pytest.raises(dg.Failure) as failure:
        manager.handle_output(_out(), _frame(3))
    message = failure.value.description
    assert "CUSTOMER_ASSETS_INTERMEDIATES_URL=gs://no-such-bucket/intermediates" in message
    assert "bucket no-such-bucket does not exist" in message and "not retried" in message
    assert failure.value.allow_retries is False
    # Nothing staged is left behind.
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    # A cleanup of a week in a bucket that does not exist finds nothing to remove, and no error.
    settings = _settings(tmp_path, "gs://no-such-bucket/x", gcs_emulator)
    assert remove_intermediates(settings, WEEK) == ([], [])


def test_the_setting_picks_the_bucket_and_refuses_anything_else(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", raising=False)
    assert settings_from_env().intermediates_url is None
    monkeypatch.setenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", "gs://team-bucket/customer_assets")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9")
    resources = resources_for("local")
    manager = resources["io_manager"]
    # one configuration: the IO manager writes where the cleanup looks (the settings' roots)
    assert manager.settings is resources["settings"]
    assert manager._root() == IntermediateRoot("gs://team-bucket/customer_assets", "127.0.0.1:9")
    assert manager.base_dir == str(tmp_path)
    wrong_values = (
        "s3://bucket/x",
        "gs://user:hunter2@bucket/x",
        "gs://bucket/x?token=hunter2",
        "/mnt/bucket",
    )
    for wrong in wrong_values:
        monkeypatch.setenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", wrong)
        with pytest.raises(ValueError, match="INTERMEDIATES_URL must be gs://bucket/prefix") as err:
            settings_from_env()
        assert "hunter2" not in str(err.value)


def test_a_week_of_the_graph_runs_with_its_intermediates_in_the_bucket(
    pipeline_env, small_source, gcs_emulator, bucket_url, monkeypatch
):
    from customer_assets_tests.support.pipeline import run_week, warehouse

    tmp = pipeline_env("small_source")
    monkeypatch.setenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", bucket_url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    written = []
    instance = dg.DagsterInstance.ephemeral()
    # Garbage of the tests before (the contexts built by hand clean up in __del__) is collected
    # now, not while the run's first step imports pandera's backends: a finalizer run mid-import
    # made CPython 3.11.7 fail that import ("AST constructor recursion depth mismatch").
    gc.collect()
    result = run_week(WEEK, instance=instance)
    assert result.success
    for event in result.get_asset_materialization_events():
        where = event.materialization.metadata.get("intermediate")
        if where is not None:
            written.append(where.text)
    assert len(written) >= 5 and all(w.startswith(f"{bucket_url}/etl/") for w in written), written
    loaded = warehouse(
        tmp / "warehouse.duckdb",
        f"""SELECT count(*) AS n
        FROM customer_analytics.weekly_transactions WHERE week_start = TIMESTAMP '{WEEK}'""",
    )
    assert loaded.loc[0, "n"] > 1000
    # The week's end removed every object of the run (its claim too) and every local copy.
    assert _objects(gcs_emulator, bucket_url) == []
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]


def _rates_file(folder: Path, content: bytes) -> str:
    """A stand-in for a rates file: its bytes say which one a step got."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "eurofxref-hist.zip"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("in_bucket", [True, False])
def test_the_weeks_steps_convert_with_the_rates_file_validation_used(
    tmp_path, gcs_emulator, bucket_url, in_bucket
):
    """Review finding 1 of issue 27: a step in another pod (another data dir, sharing only the
    bucket) converted with whatever rates its own disk held. It now gets the file the week's
    validation published, and the week's cleanup removes it with the intermediates."""
    from customer_assets.assets.week_rates import publish_week_rates, week_rates
    from customer_assets.resources.rates import EcbRates

    url = bucket_url if in_bucket else None
    validating = _settings(tmp_path / "validation-pod", url, gcs_emulator)
    used = _rates_file(tmp_path / "fetched", b"the rates validation refreshed")
    publish_week_rates(validating, WEEK, used)

    other = (
        validating if not in_bucket else _settings(tmp_path / "transform-pod", url, gcs_emulator)
    )
    # the other step's own disk holds an older copy of its own
    _rates_file(Path(other.data_dir, "ecb"), b"an older copy on the other disk")
    rates = EcbRates(data_dir=other.data_dir)
    got = week_rates(other, rates, WEEK)
    assert Path(got).read_bytes() == b"the rates validation refreshed"
    assert got.startswith(other.data_dir)
    # a week that published nothing (a step run alone) takes what the disk holds
    assert week_rates(other, rates, OTHER_WEEK) == rates.in_use()

    for settings in {id(s): s for s in (validating, other)}.values():
        remove_intermediates(settings, WEEK)
    assert not Path(got).exists()
    assert not list(Path(tmp_path).rglob(f"{WEEK}.*"))
    if in_bucket:
        assert not [o for o in _objects(gcs_emulator, bucket_url) if WEEK in o and "ecb" in o]
