"""The BigQuery warehouse IO manager against a local BigQuery emulator, driven through Dagster.

Every test writes to its own dataset (``dataset_override``) so they never see each other's tables;
the assertions query BigQuery back with a real ``google.cloud.bigquery`` bigquery_client.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from customer_assets import frames
from customer_assets.frames import CarriedWeek, StoredFrame
from customer_assets.io_managers import bigquery_warehouse
from customer_assets.io_managers.bigquery_calls import LoadBudget
from customer_assets.io_managers.bigquery_warehouse import BigQueryWarehouseIOManager
from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.partitions import weekly_partitions
from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets_tests.support.sources import BIGQUERY_PROJECT as PROJECT

WEEK_A, WEEK_B = "2026-09-07", "2026-09-14"


@pytest.fixture
def dataset() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def manager(bigquery_endpoint, dataset, tmp_path):
    def build(**overrides) -> BigQueryWarehouseIOManager:
        config = {
            "warehouse": BigQueryWarehouse(
                project=PROJECT, dataset_override=dataset, emulator_host=str(bigquery_endpoint)
            ),
            "reports_dir": str(tmp_path / "reports"),
            "retry_base_seconds": 0.01,
            "quota_wait_seconds": 0.01,
        }
        config.update(overrides)
        return BigQueryWarehouseIOManager(**config)

    return build


# --------------------------------------------------------------------------------------------------
# frames and assets


def transactions(week: str, n: int = 3, prefix: str = "T", **extra) -> pd.DataFrame:
    start = pd.Timestamp(week, tz="UTC")
    frame = pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{week}-{i}" for i in range(n)],
            "customer_id": [f"C{i % 2}" for i in range(n)],
            "product_id": [f"P{i}" for i in range(n)],
            "amount": [10.5 + i for i in range(n)],
            "timestamp": [start + pd.Timedelta(hours=13 * i + 1) for i in range(n)],
            "hour_of_day": [(13 * i + 1) % 24 for i in range(n)],
            "is_weekend": [False] * n,
            "week_start": [start.tz_convert(None)] * n,
        }
    )
    frame = frame.astype(
        {
            "transaction_id": object,
            "customer_id": object,
            "product_id": object,
            "amount": float,
            "timestamp": pd.DatetimeTZDtype(tz="UTC"),
            "hour_of_day": "int64",
            "is_weekend": bool,
            "week_start": "datetime64[ns]",
        }
    )  # as pandera coerces them, even when empty
    for name, values in extra.items():
        frame[name] = values
    return frame


def metrics(week: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "week_start": [pd.Timestamp(week)],
            "total_records": [100],
            "quality_score": [97.5],
            "computed_at": [pd.Timestamp.now(tz="UTC")],
        }
    )


def warehouse_asset(
    frames: dict[str, pd.DataFrame],
    name: str = "weekly_transactions",
    partition_expr: str = "timestamp",
    **kwargs,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": partition_expr},
        **kwargs,
    )
    def _asset(context):
        """Test transactions of the week."""
        return frames[context.partition_key]

    return _asset


def run(
    assets, partition: str, io_manager, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        partition_key=partition,
        resources={"warehouse_io_manager": io_manager},
        raise_on_error=raise_on_error,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Messages of every failed step, with their causes."""
    texts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                texts.append(f"{error.cls_name}: {error.message}")
                error = error.cause
    return "\n".join(texts)


def materialization(result: dg.ExecuteInProcessResult) -> dict:
    return result.get_asset_materialization_events()[0].materialization.metadata


def rows(
    bigquery_client, dataset: str, table: str = "weekly_transactions", order: str = "transaction_id"
) -> pd.DataFrame:
    sql = f"SELECT * FROM `{PROJECT}.{dataset}.{table}` ORDER BY {order}"
    return bigquery_client.query(sql).result().to_arrow(create_bqstorage_client=False).to_pandas()


def tables(bigquery_client, dataset: str) -> list[str]:
    return sorted(t.table_id for t in bigquery_client.list_tables(f"{PROJECT}.{dataset}"))


def same_values(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal values whatever the resolution (BigQuery reads back microseconds, pandas writes
    nanoseconds)."""
    left, right = left.reset_index(drop=True), right.reset_index(drop=True)
    assert list(left.columns) == list(right.columns)
    for column in left.columns:
        a, b = left[column], right[column]
        if pd.api.types.is_datetime64_any_dtype(a):
            a, b = (
                a.astype(f"datetime64[us{', UTC' if getattr(a.dtype, 'tz', None) else ''}]"),
                b.astype(f"datetime64[us{', UTC' if getattr(b.dtype, 'tz', None) else ''}]"),
            )
        assert a.tolist() == b.tolist(), column


# --------------------------------------------------------------------------------------------------
# tests


def test_creates_table_and_loads_a_week(bigquery_client, manager, dataset, tmp_path):
    frame = transactions(WEEK_A)
    result = run([warehouse_asset({WEEK_A: frame})], WEEK_A, manager())

    table = bigquery_client.get_table(f"{PROJECT}.{dataset}.weekly_transactions")
    assert {f.name: f.field_type for f in table.schema} == {
        "transaction_id": "STRING",
        "customer_id": "STRING",
        "product_id": "STRING",
        "amount": "FLOAT",
        "timestamp": "TIMESTAMP",
        "hour_of_day": "INTEGER",
        "is_weekend": "BOOLEAN",
        "week_start": "DATETIME",
    }
    assert table.time_partitioning.type_ == "DAY" and table.time_partitioning.field == "timestamp"
    assert table.clustering_fields == ["customer_id", "product_id", "transaction_id"]
    assert table.description == "Test transactions of the week."
    same_values(rows(bigquery_client, dataset), frame)
    assert tables(bigquery_client, dataset) == ["weekly_transactions"]  # staging dropped

    metadata = materialization(result)
    assert metadata["rows_loaded"].value == 3
    assert metadata["destination_table"].value == f"{PROJECT}.{dataset}.weekly_transactions"
    report = json.loads(
        Path(tmp_path, "reports", WEEK_A, "load_report_weekly_transactions.json").read_text()
    )
    assert report["rows_loaded"] == 3 and set(report["job_ids"]) >= {"load", "merge"}
    assert all(
        bigquery_client.get_job(job_id).state == "DONE" for job_id in report["job_ids"].values()
    )
    assert any("EMULATOR" in w for w in report["warnings"])


def test_same_week_twice_leaves_it_once(bigquery_client, manager, dataset):
    frame = transactions(WEEK_A)
    asset = warehouse_asset({WEEK_A: frame})
    run([asset], WEEK_A, manager())
    first = rows(bigquery_client, dataset)
    run([asset], WEEK_A, manager())
    second = rows(bigquery_client, dataset)
    assert len(second) == len(frame)
    pd.testing.assert_frame_equal(first, second)


def test_weeks_stay_apart_and_rewriting_one_keeps_the_other(bigquery_client, manager, dataset):
    frames = {WEEK_A: transactions(WEEK_A, n=3), WEEK_B: transactions(WEEK_B, n=2)}
    asset = warehouse_asset(frames)
    run([asset], WEEK_A, manager())
    run([asset], WEEK_B, manager())
    week_b = rows(bigquery_client, dataset).query(
        "transaction_id.str.contains(@WEEK_B)", engine="python"
    )
    assert len(rows(bigquery_client, dataset)) == 5

    frames[WEEK_A] = transactions(WEEK_A, n=1, prefix="R")  # the week shrinks and changes
    run([asset], WEEK_A, manager())
    after = rows(bigquery_client, dataset)
    assert sorted(after["transaction_id"]) == [f"R{WEEK_A}-0", f"T{WEEK_B}-0", f"T{WEEK_B}-1"]
    pd.testing.assert_frame_equal(
        after[after["transaction_id"].str.startswith("T")].reset_index(drop=True),
        week_b.reset_index(drop=True),
    )

    frames[WEEK_A] = transactions(WEEK_A, n=0)  # an empty week empties the week, nothing else
    run([asset], WEEK_A, manager())
    pd.testing.assert_frame_equal(rows(bigquery_client, dataset), week_b.reset_index(drop=True))


def test_failure_between_staging_and_swap_keeps_the_old_week(
    bigquery_client, manager, dataset, monkeypatch
):
    asset_frames = {WEEK_A: transactions(WEEK_A)}
    asset = warehouse_asset(asset_frames)
    run([asset], WEEK_A, manager())
    before = rows(bigquery_client, dataset)

    seen = {}

    def broken_merge(staged, *args, **kwargs):
        seen["staging"] = staged.staging_id
        seen["staging_rows"] = staged.client.get_table(staged.staging_id).num_rows
        raise RuntimeError("injected: crash before the swap")

    monkeypatch.setattr(bigquery_warehouse, "merge_week", broken_merge)
    asset_frames[WEEK_A] = transactions(WEEK_A, n=5, prefix="NEW")
    result = run([asset], WEEK_A, manager(), raise_on_error=False)

    assert not result.success and "injected: crash before the swap" in failure_text(result)
    assert (
        seen["staging"]
        .split(".")[-1]
        .startswith(f"weekly_transactions__staging_{WEEK_A.replace('-', '')}_")
    )
    assert seen["staging_rows"] == 5  # the new week was staged...
    pd.testing.assert_frame_equal(rows(bigquery_client, dataset), before)  # ...but never swapped in
    assert tables(bigquery_client, dataset) == ["weekly_transactions"]  # and staging is gone


def test_new_column_is_added_and_old_rows_are_null(bigquery_client, manager, dataset):
    frames = {
        WEEK_A: transactions(WEEK_A),
        WEEK_B: transactions(WEEK_B, fx_source=["ecb", "ecb", "ecb"]),
    }
    asset = warehouse_asset(frames)
    run([asset], WEEK_A, manager())
    result = run([asset], WEEK_B, manager())

    table = bigquery_client.get_table(f"{PROJECT}.{dataset}.weekly_transactions")
    assert [f.name for f in table.schema][-1] == "fx_source"
    loaded = rows(bigquery_client, dataset)
    assert loaded.loc[loaded["transaction_id"].str.contains(WEEK_A), "fx_source"].isna().all()
    assert (loaded.loc[loaded["transaction_id"].str.contains(WEEK_B), "fx_source"] == "ecb").all()
    warnings = materialization(result)["warnings"].value
    assert any("fx_source" in w for w in warnings)

    # A column missing from a later frame is left NULL, never dropped.
    frames[WEEK_A] = transactions(WEEK_A).drop(columns=["is_weekend"])
    run([asset], WEEK_A, manager())
    loaded = rows(bigquery_client, dataset)
    assert "is_weekend" in loaded.columns
    assert loaded.loc[loaded["transaction_id"].str.contains(WEEK_A), "is_weekend"].isna().all()


def test_changed_type_stops_with_a_diff(bigquery_client, manager, dataset):
    frames = {WEEK_A: transactions(WEEK_A), WEEK_B: transactions(WEEK_B)}
    frames[WEEK_B]["amount"] = frames[WEEK_B]["amount"].astype(str)
    asset = warehouse_asset(frames)
    run([asset], WEEK_A, manager())
    result = run([asset], WEEK_B, manager(), raise_on_error=False)

    text = failure_text(result)
    assert "SchemaMismatchError" in text and "amount: warehouse FLOAT64 != incoming STRING" in text
    assert len(rows(bigquery_client, dataset)) == 3
    assert tables(bigquery_client, dataset) == ["weekly_transactions"]  # stopped before any staging


def test_naive_week_start_partitions_data_quality_metrics(bigquery_client, manager, dataset):
    asset = warehouse_asset(
        {WEEK_A: metrics(WEEK_A), WEEK_B: metrics(WEEK_B)},
        name="data_quality_metrics",
        partition_expr="week_start",
    )
    for week in (WEEK_A, WEEK_B, WEEK_A):
        run([asset], week, manager())
    table = bigquery_client.get_table(f"{PROJECT}.{dataset}.data_quality_metrics")
    types = {f.name: f.field_type for f in table.schema}
    assert types["week_start"] == "DATETIME" and types["computed_at"] == "TIMESTAMP"
    assert table.time_partitioning.field == "week_start" and not table.clustering_fields
    loaded = rows(bigquery_client, dataset, "data_quality_metrics", order="week_start")
    assert loaded["week_start"].tolist() == [pd.Timestamp(WEEK_A), pd.Timestamp(WEEK_B)]


def test_load_input_reads_the_week_back(bigquery_client, manager, dataset):
    frames = {WEEK_A: transactions(WEEK_A), WEEK_B: transactions(WEEK_B, n=2)}
    upstream = warehouse_asset(frames)
    seen = {}

    @dg.asset(partitions_def=weekly_partitions, ins={"weekly": dg.AssetIn(key=upstream.key)})
    def downstream(weekly: pd.DataFrame) -> None:
        seen["frame"] = weekly

    run([upstream], WEEK_B, manager())
    run([upstream, downstream], WEEK_A, manager())
    same_values(seen["frame"].sort_values("transaction_id"), frames[WEEK_A])
    assert (
        seen["frame"]["hour_of_day"].dtype == "int64" and seen["frame"]["is_weekend"].dtype == bool
    )


def test_an_input_reads_only_the_columns_it_asks_for(bigquery_client, manager, dataset, tmp_path):
    """dim_customers needs 6 of the snapshots' ~50 columns, over every week: both warehouses select
    only those."""
    frames = {WEEK_A: transactions(WEEK_A)}
    upstream = warehouse_asset(frames)
    seen = []

    @dg.asset(
        partitions_def=weekly_partitions,
        ins={
            "weekly": dg.AssetIn(
                key=upstream.key, metadata={"columns": ["transaction_id", "amount"]}
            )
        },
    )
    def downstream(weekly: pd.DataFrame) -> None:
        seen.append(weekly.sort_values("transaction_id").reset_index(drop=True))

    duck = DuckDBWarehouseIOManager(
        warehouse=DuckDBWarehouse(database=str(tmp_path / "w.duckdb")),
        reports_dir=str(tmp_path / "reports"),
    )
    for io_manager in (manager(), duck):
        run([upstream, downstream], WEEK_A, io_manager)
    for frame in seen:
        assert frame.columns.tolist() == ["transaction_id", "amount"]
        assert frame["amount"].tolist() == frames[WEEK_A]["amount"].tolist()


def _flaky(monkeypatch, failures: int | None, error: Exception) -> list[int]:
    """Make ``Client.load_table_from_file`` raise ``error`` ``failures`` times (None: always)."""
    calls: list[int] = []
    original = bigquery.Client.load_table_from_file

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if failures is None or len(calls) <= failures:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "load_table_from_file", flaky)
    return calls


def test_transient_errors_are_retried(bigquery_client, manager, dataset, monkeypatch):
    calls = _flaky(monkeypatch, 2, gexc.InternalServerError("backendError: injected"))
    result = run([warehouse_asset({WEEK_A: transactions(WEEK_A)})], WEEK_A, manager())
    assert len(calls) == 3 and len(rows(bigquery_client, dataset)) == 3
    assert materialization(result)["retries"].value == 2


def test_a_load_that_lost_a_race_with_another_week_is_retried(
    bigquery_client, manager, dataset, monkeypatch
):
    """Weeks loaded at once: BigQuery fails a statement that raced another update of the same table;
    it changed nothing and is run again."""
    conflict = gexc.BadRequest(
        f"Could not serialize access to table {PROJECT}:{dataset}.weekly_transactions due to "
        "concurrent update",
        errors=[{"reason": "invalidQuery", "message": "due to concurrent update"}],
    )
    calls = _flaky(monkeypatch, 1, conflict)
    result = run([warehouse_asset({WEEK_A: transactions(WEEK_A)})], WEEK_A, manager())
    assert len(calls) == 2 and len(rows(bigquery_client, dataset)) == 3
    assert materialization(result)["retries"].value == 1


def test_retries_stop_after_max_retries(bigquery_client, manager, dataset, monkeypatch):
    calls = _flaky(monkeypatch, None, gexc.ServiceUnavailable("injected 503"))
    result = run(
        [warehouse_asset({WEEK_A: transactions(WEEK_A)})], WEEK_A, manager(), raise_on_error=False
    )
    assert not result.success and len(calls) == 1 + 3
    assert "still failing after 3 retries" in failure_text(result)
    assert tables(bigquery_client, dataset) == ["weekly_transactions"]  # staging dropped even so


def test_quota_exceeded_waits_and_retries(bigquery_client, manager, dataset, monkeypatch):
    quota = gexc.Forbidden(
        "Quota exceeded: too many table update operations",
        errors=[{"reason": "quotaExceeded", "message": "Quota exceeded"}],
    )
    calls = _flaky(monkeypatch, 1, quota)
    run([warehouse_asset({WEEK_A: transactions(WEEK_A)})], WEEK_A, manager())
    assert len(calls) == 2 and len(rows(bigquery_client, dataset)) == 3


def test_permission_denied_fails_without_retry(bigquery_client, manager, dataset, monkeypatch):
    denied = gexc.Forbidden(
        f"Access Denied: Table {PROJECT}:{dataset}.x: Permission bigquery.tables.updateData denied on table",
        errors=[{"reason": "accessDenied"}],
    )
    calls = _flaky(monkeypatch, None, denied)
    asset = warehouse_asset(
        {WEEK_A: transactions(WEEK_A)}, retry_policy=dg.RetryPolicy(max_retries=2)
    )
    result = run([asset], WEEK_A, manager(), raise_on_error=False)

    assert not result.success and len(calls) == 1
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    text = failure_text(result)
    assert "bigquery.tables.updateData" in text and "AnonymousCredentials" in text


def test_permission_failure_names_the_service_account(manager, dataset):
    class Credentials:
        service_account_email = "etl@prod.iam.gserviceaccount.com"

    class Client:
        _credentials = Credentials()

    caller = manager()._caller(Client(), log=None, load=LoadBudget(deadline=time.monotonic() + 60))
    failure = caller.auth_failure(
        gexc.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]),
        "load job",
        ("bigquery.jobs.create",),
    )
    assert isinstance(failure, dg.Failure) and failure.allow_retries is False
    assert "etl@prod.iam.gserviceaccount.com" in failure.description
    assert "bigquery.jobs.create" in failure.description


def test_column_names_stay_lower_case_and_match_duckdb(bigquery_client, manager, dataset, tmp_path):
    frame = transactions(WEEK_A)
    asset = warehouse_asset({WEEK_A: frame})
    run([asset], WEEK_A, manager())
    database = str(tmp_path / "warehouse.duckdb")
    run(
        [asset],
        WEEK_A,
        DuckDBWarehouseIOManager(
            warehouse=DuckDBWarehouse(database=database), reports_dir=str(tmp_path / "duck")
        ),
    )

    bq_columns = [
        f.name for f in bigquery_client.get_table(f"{PROJECT}.{dataset}.weekly_transactions").schema
    ]
    with duckdb.connect(database, read_only=True) as con:
        duck_columns = [
            r[0]
            for r in con.execute('DESCRIBE "customer_analytics"."weekly_transactions"').fetchall()
        ]
    assert bq_columns == duck_columns == list(frame.columns)
    assert all(c == c.lower() for c in bq_columns)
    assert list(rows(bigquery_client, dataset).columns) == list(frame.columns)


def test_rows_outside_the_week_stop_before_touching_bigquery(bigquery_client, manager, dataset):
    frame = pd.concat([transactions(WEEK_A), transactions(WEEK_B, n=1)], ignore_index=True)
    result = run([warehouse_asset({WEEK_A: frame})], WEEK_A, manager(), raise_on_error=False)
    assert not result.success and "1 of 4 rows have timestamp outside the week" in failure_text(
        result
    )
    with pytest.raises(gexc.NotFound):
        bigquery_client.get_dataset(f"{PROJECT}.{dataset}")


def _stored(tmp_path, frame: pd.DataFrame) -> StoredFrame:
    path = tmp_path / "week.parquet"
    frame.to_parquet(path, index=False)
    return StoredFrame(path)


def test_a_stored_week_loads_batch_by_batch_like_the_frame(
    bigquery_client, manager, dataset, tmp_path, monkeypatch
):
    """The pipeline hands the transformed week over as a Parquet file: same rows and types as a
    frame gives."""
    monkeypatch.setattr(frames, "BATCH_ROWS", 2)  # five rows: three batches
    frame = transactions(WEEK_A, n=5)
    stored = _stored(tmp_path, frame)
    result = run([warehouse_asset({WEEK_A: stored})], WEEK_A, manager())
    assert materialization(result)["rows_loaded"].value == 5
    from_file = rows(bigquery_client, dataset)
    run([warehouse_asset({WEEK_A: frame})], WEEK_A, manager())
    pd.testing.assert_frame_equal(from_file, rows(bigquery_client, dataset))
    assert from_file["transaction_id"].tolist() == frame["transaction_id"].tolist()


def test_a_stored_week_with_a_late_row_outside_it_stops_before_bigquery(
    bigquery_client, manager, dataset, tmp_path, monkeypatch
):
    monkeypatch.setattr(frames, "BATCH_ROWS", 2)
    # in the 3rd batch
    frame = pd.concat([transactions(WEEK_A, n=4), transactions(WEEK_B, n=1)], ignore_index=True)
    result = run(
        [warehouse_asset({WEEK_A: _stored(tmp_path, frame)})],
        WEEK_A,
        manager(),
        raise_on_error=False,
    )
    assert not result.success and "1 of 5 rows have timestamp outside the week" in failure_text(
        result
    )
    with pytest.raises(gexc.NotFound):
        bigquery_client.get_dataset(f"{PROJECT}.{dataset}")


def test_load_timeout_bounds_the_retries(bigquery_client, manager, dataset, monkeypatch):
    calls = _flaky(monkeypatch, None, gexc.BadGateway("injected 502"))
    io = manager(retry_base_seconds=30, load_timeout_seconds=5)
    result = run(
        [warehouse_asset({WEEK_A: transactions(WEEK_A)})], WEEK_A, io, raise_on_error=False
    )
    assert not result.success and len(calls) == 1
    assert "LoadTimeoutError" in failure_text(result)


def test_missing_credentials_fail_without_retry(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    io = BigQueryWarehouseIOManager(
        warehouse=BigQueryWarehouse(project=PROJECT), reports_dir=str(tmp_path)
    )
    with pytest.raises(dg.Failure) as failure:
        io._connect(dg.get_dagster_logger())
    assert (
        failure.value.allow_retries is False
        and "GOOGLE_APPLICATION_CREDENTIALS" in failure.value.description
    )


def test_a_transaction_moved_between_weeks_is_moved_not_copied(bigquery_client, manager, dataset):
    """Issue 12, finding 4: a transaction whose timestamp moved to another week was then in both
    weeks. The MERGE updates the old week's row in place (in the key window, here a week either
    side)."""
    frames = {WEEK_A: transactions(WEEK_A, n=3), WEEK_B: transactions(WEEK_B, n=2)}
    asset = _keyed_asset(frames)
    run([asset], WEEK_A, manager())
    moved = (
        frames[WEEK_A]
        .iloc[[1]]
        .assign(timestamp=pd.Timestamp(WEEK_B, tz="UTC") + pd.Timedelta(hours=5), amount=99.0)
    )
    frames[WEEK_B] = pd.concat([frames[WEEK_B], moved], ignore_index=True)
    result = run([asset], WEEK_B, manager())
    after = rows(bigquery_client, dataset)
    assert after["transaction_id"].is_unique and len(after) == 5
    row = after.set_index("transaction_id").loc[f"T{WEEK_A}-1"]
    assert row["amount"] == 99.0 and row["timestamp"] >= pd.Timestamp(WEEK_B, tz="UTC")
    assert materialization(result)["moved_from_other_weeks"].value == 1


def _keyed_asset(frames: dict[str, pd.DataFrame]) -> dg.AssetsDefinition:
    @dg.asset(
        name="weekly_transactions",
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={
            "partition_expr": "timestamp",
            "unique_key": "transaction_id",
            "unique_within_weeks": 1,
        },
    )
    def _asset(context):
        return frames[context.partition_key]

    return _asset


def _records(week: str, rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": [r[0] for r in rows],
            "source_customer_id": [r[1] for r in rows],
            "customer_id": [r[2] for r in rows],
            "week_start": pd.Series([pd.Timestamp(week)] * len(rows), dtype="datetime64[ns]"),
        }
    )


def test_a_carried_week_copies_the_unchanged_rows_inside_bigquery(
    bigquery_client, manager, dataset
):
    """A ``CarriedWeek``: the given rows staged, the carried partition's rows whose key none of them
    holds added to the staging table by one statement, the week swapped in and counted."""
    key = ["source", "source_customer_id"]
    first = _records(
        WEEK_A,
        [("crm", "A", "A"), ("crm", "B", "B"), ("database", "B", "B"), ("erp", "7", "erp:7")],
    )
    given = _records(WEEK_B, [("crm", "B", "A"), ("database", "C", "C")])
    weeks = {WEEK_A: first, WEEK_B: CarriedWeek(given, pd.Timestamp(WEEK_A), key)}
    asset = warehouse_asset(weeks, name="customer_identity_map", partition_expr="week_start")
    run([asset], WEEK_A, manager())
    metadata = materialization(run([asset], WEEK_B, manager()))
    assert (
        metadata["rows_loaded"].value,
        metadata["carried_rows"].value,
        metadata["given_rows"].value,
    ) == (5, 3, 2)
    loaded = rows(
        bigquery_client, dataset, "customer_identity_map", "week_start, source, source_customer_id"
    )
    week_b = loaded[loaded["week_start"] == pd.Timestamp(WEEK_B)]
    assert list(
        zip(week_b["source"], week_b["source_customer_id"], week_b["customer_id"], strict=True)
    ) == [
        ("crm", "A", "A"),
        ("crm", "B", "A"),
        ("database", "B", "B"),
        ("database", "C", "C"),
        ("erp", "7", "erp:7"),
    ]
    assert (loaded["week_start"] == pd.Timestamp(WEEK_A)).sum() == 4
    run([asset], WEEK_B, manager())  # a re-run replaces the week exactly
    again = rows(
        bigquery_client, dataset, "customer_identity_map", "week_start, source, source_customer_id"
    )
    pd.testing.assert_frame_equal(again, loaded)
