"""The local warehouse: a week loaded a slice at a time or straight from a Parquet file, replaced on
rerun."""

import gc
import subprocess

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from customer_assets import frames
from customer_assets.frames import StoredFrame
from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.partitions import weekly_partitions
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets_tests.support.disks import small_tmpfs

WEEK = "2026-11-16"


def _week(n: int, prefix: str = "T") -> pd.DataFrame:
    start = pd.Timestamp(WEEK, tz="UTC")
    return pd.DataFrame(
        {
            "transaction_id": pd.array([f"{prefix}{i}" for i in range(n)], dtype="str"),
            "amount": [1.5 * i for i in range(n)],
            "timestamp": [start + pd.Timedelta(hours=7 * i, microseconds=i) for i in range(n)],
            "week_start": [start.tz_convert(None)] * n,
        }
    )


def _materialize(
    tmp_path, value, week: str = WEEK, name: str = "weekly_transactions", column: str = "timestamp"
) -> tuple[str, dict]:
    """``value`` loaded as the week of a table of the local warehouse; the file and the
    materialization's metadata."""

    @dg.asset(
        name=name,
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": column},
    )
    def asset():
        return value

    database = str(tmp_path / "warehouse.duckdb")
    manager = DuckDBWarehouseIOManager(
        warehouse=DuckDBWarehouse(database=database), reports_dir=str(tmp_path / "reports")
    )
    result = dg.materialize(
        [asset], partition_key=week, resources={"warehouse_io_manager": manager}
    )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    return database, {k: v.value for k, v in metadata.items()}


def _load(tmp_path, value) -> pd.DataFrame:
    database, metadata = _materialize(tmp_path, value)
    assert metadata["rows_loaded"] == len(value)
    with duckdb.connect(database, read_only=True) as con:
        return con.execute(
            "SELECT * FROM customer_analytics.weekly_transactions ORDER BY transaction_id"
        ).df()


def test_slices_and_a_parquet_file_load_the_same_rows_and_a_rerun_replaces_the_week(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(frames, "BATCH_ROWS", 2)  # seven rows: four slices
    frame = _week(7)
    from_slices = _load(tmp_path, frame)
    assert from_slices["transaction_id"].tolist() == [f"T{i}" for i in range(7)]
    assert from_slices["amount"].tolist() == frame["amount"].tolist()
    path = tmp_path / "week.parquet"
    frame.to_parquet(path, index=False)
    from_file = _load(tmp_path, StoredFrame(path))  # the same week again: replaced, not added
    pd.testing.assert_frame_equal(from_file, from_slices)
    assert len(_load(tmp_path, _week(3, prefix="R"))) == 3  # a smaller week replaces it exactly


def test_a_loaded_week_comes_back_with_its_types_and_missing_values(tmp_path):
    """Inputs are read through Arrow: text (with missing values), numbers, flags and timestamps,
    zoned and naive, come back as they were written."""
    start = pd.Timestamp(WEEK, tz="UTC")
    written = pd.DataFrame(
        {
            "customer_id": pd.array(["C1", None, "C3"], dtype="str"),
            "visits": pd.array([1, 2, 3], dtype="int64"),
            "value": [1.25, float("nan"), 3.0],
            "is_current": [True, False, True],
            "timestamp": [start + pd.Timedelta(hours=h, microseconds=h) for h in (1, 2, 3)],
            "week_start": [start.tz_convert(None)] * 3,
        }
    )
    seen = {}

    @dg.asset(
        name="weekly_customer_profiles",
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": "timestamp"},
    )
    def upstream():
        return written

    @dg.asset(
        partitions_def=weekly_partitions,
        io_manager_key="mem",
        ins={"profiles": dg.AssetIn(key=["customer_analytics", "weekly_customer_profiles"])},
    )
    def downstream(profiles: pd.DataFrame):
        seen["frame"] = profiles
        return len(profiles)

    manager = DuckDBWarehouseIOManager(
        warehouse=DuckDBWarehouse(database=str(tmp_path / "w.duckdb")),
        reports_dir=str(tmp_path / "reports"),
    )
    dg.materialize(
        [upstream, downstream],
        partition_key=WEEK,
        resources={"warehouse_io_manager": manager, "mem": dg.InMemoryIOManager()},
    )
    loaded = seen["frame"].sort_values("visits").reset_index(drop=True)
    expected = written.assign(
        timestamp=written["timestamp"].astype("datetime64[us, UTC]"),
        week_start=written["week_start"].astype("datetime64[us]"),
    )
    pd.testing.assert_frame_equal(loaded, expected)


@pytest.fixture
def full_disk(tmp_path):
    """A real 3 MiB file system (tmpfs) for the warehouse file; skipped where mounting is not
    permitted."""
    with small_tmpfs(tmp_path / "tiny", 3) as mount:
        yield mount


def _big_week(n: int) -> pd.DataFrame:
    start = pd.Timestamp(WEEK, tz="UTC")
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "transaction_id": pd.array(
                [f"T{(i * 7919) % 1000003:x}{i}" for i in range(n)], dtype="str"
            ),
            "amount": rng.random(n),
            "timestamp": start + pd.to_timedelta(np.arange(n), unit="s"),
            "week_start": [start.tz_convert(None)] * n,
        }
    )


def test_a_full_warehouse_disk_is_the_headline_and_the_week_is_all_or_nothing(full_disk, tmp_path):
    """Issue 21, item 14: the headline was `TransactionContext Error: cannot rollback - no
    transaction is active` (the ROLLBACK after the failed COMMIT), with "No space left on device"
    only in the chained traceback."""
    database = str(full_disk / "warehouse.duckdb")
    manager = DuckDBWarehouseIOManager(
        warehouse=DuckDBWarehouse(database=database), reports_dir=str(tmp_path / "reports")
    )

    def load(value):
        @dg.asset(
            name="weekly_transactions",
            key_prefix=["customer_analytics"],
            partitions_def=weekly_partitions,
            io_manager_key="warehouse_io_manager",
            metadata={"partition_expr": "timestamp"},
        )
        def asset():
            return value

        return dg.materialize(
            [asset],
            partition_key=WEEK,
            resources={"warehouse_io_manager": manager},
            raise_on_error=False,
        )

    assert load(_week(5)).success
    result = load(_big_week(300_000))
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    headline = error.message.splitlines()[0]
    assert (
        "The warehouse disk is full" in headline
        and database in headline
        and "cannot rollback" not in headline
    )
    subprocess.run(["mount", "-o", "remount,size=64m", str(full_disk)], check=True)  # space freed
    # The fault invalidated this process's DuckDB instance; once it is released, the week is all or
    # nothing: the old rows or, when only the checkpoint after the commit failed, the new ones.
    del result, error
    gc.collect()
    with duckdb.connect(database) as con:
        assert con.execute(
            "SELECT count(*) FROM customer_analytics.weekly_transactions"
        ).fetchone()[0] in (5, 300_000)


def _records(week: str, rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": pd.array([r[0] for r in rows], dtype="str"),
            "source_customer_id": pd.array([r[1] for r in rows], dtype="str"),
            "customer_id": pd.array([r[2] for r in rows], dtype="str"),
            "week_start": pd.Series([pd.Timestamp(week)] * len(rows), dtype="datetime64[ns]"),
        }
    )


def _load_carried(tmp_path, week: str, value) -> tuple[pd.DataFrame, dict]:
    database, metadata = _materialize(tmp_path, value, week, "customer_identity_map", "week_start")
    with duckdb.connect(database, read_only=True) as con:
        rows = con.execute(
            "SELECT * FROM customer_analytics.customer_identity_map "
            "ORDER BY week_start, source, source_customer_id"
        ).df()
    return rows, metadata


def test_a_carried_week_copies_the_unchanged_rows_inside_the_warehouse(tmp_path):
    """A ``CarriedWeek`` loads the rows it gives, and copies from the carried partition every row
    whose key none of them holds, with this week's start: in one transaction, counted."""
    first, second = "2026-11-09", "2026-11-16"
    _load_carried(
        tmp_path,
        first,
        _records(
            first,
            [("crm", "A", "A"), ("crm", "B", "B"), ("database", "B", "B"), ("erp", "7", "erp:7")],
        ),
    )
    given = _records(second, [("crm", "B", "A"), ("database", "C", "C")])  # B merged, C new
    rows, metadata = _load_carried(
        tmp_path,
        second,
        frames.CarriedWeek(given, pd.Timestamp(first), ["source", "source_customer_id"]),
    )
    week2 = rows[rows["week_start"] == pd.Timestamp(second)]
    assert list(
        zip(week2["source"], week2["source_customer_id"], week2["customer_id"], strict=True)
    ) == [
        ("crm", "A", "A"),
        ("crm", "B", "A"),  # given: the carried B row is not copied beside it
        ("database", "B", "B"),
        ("database", "C", "C"),
        ("erp", "7", "erp:7"),
    ]
    assert (rows["week_start"] == pd.Timestamp(first)).sum() == 4  # the carried week as it was
    assert (metadata["rows_loaded"], metadata["carried_rows"], metadata["given_rows"]) == (5, 3, 2)
    # re-run: the week replaced exactly, carried again from the same week
    again, _ = _load_carried(
        tmp_path,
        second,
        frames.CarriedWeek(given, pd.Timestamp(first), ["source", "source_customer_id"]),
    )
    pd.testing.assert_frame_equal(again, rows)
    # nothing to carry from: the week is what is given
    alone, metadata = _load_carried(
        tmp_path, second, frames.CarriedWeek(given, None, ["source", "source_customer_id"])
    )
    assert (alone["week_start"] == pd.Timestamp(second)).sum() == 2
    assert metadata["carried_rows"] == 0


def test_a_carried_week_needs_its_key_in_the_frame():
    with pytest.raises(ValueError, match="source_customer_id"):
        frames.CarriedWeek(pd.DataFrame({"source": []}), None, ["source", "source_customer_id"])
