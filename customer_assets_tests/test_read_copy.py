"""The analysts' copy of the local warehouse (``DuckDBWarehouse.publish_read_copy``): a snapshot of
the file after the week, published atomically, whose cost should not grow with the history where
the filesystem can share blocks (XFS, btrfs: the copy is a reflink, taken in constant time and
space), and a plain copy elsewhere (``duck.copy_file``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from customer_assets.duck import ReadCopyFailed, copy_file
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets_tests.support.disks import small_tmpfs

ROWS = 2_000_000  # about 30 MB of DuckDB file: enough to see whether a copy took its space


def _warehouse(folder: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(
        database=str(folder / "warehouse.duckdb"), read_copy_path=str(folder / "read.duckdb")
    )


def _fill(warehouse: DuckDBWarehouse, rows: int, start: int = 0) -> None:
    warehouse.execute("CREATE TABLE IF NOT EXISTS facts (id BIGINT, label VARCHAR, amount DOUBLE)")
    warehouse.execute(
        "INSERT INTO facts SELECT i, 'customer-' || (i * 7919 % 100003), random() "
        f"FROM range({start}, {start + rows}) t(i)"
    )


def _copy_rows(path: str) -> tuple[int, int]:
    with duckdb.connect(path, read_only=True) as con:
        [(count, top)] = con.execute("SELECT count(*), max(id) FROM facts").fetchall()
    return count, top


def _snapshot_is_kept(warehouse: DuckDBWarehouse) -> None:
    """The copy is the warehouse as published: later writes to the warehouse do not reach it
    (shared blocks are copied on write), the next publish does."""
    published = warehouse.publish_read_copy()
    assert published == str(Path(warehouse.read_copy_path).resolve())
    assert _copy_rows(published) == (ROWS, ROWS - 1)
    _fill(warehouse, 10, start=ROWS)
    warehouse.execute("DELETE FROM facts WHERE id < 1000")
    warehouse.execute("CHECKPOINT")
    assert _copy_rows(published) == (ROWS, ROWS - 1)
    warehouse.publish_read_copy()
    assert _copy_rows(published) == (ROWS + 10 - 1000, ROWS + 9)
    assert not Path(published + ".tmp").exists()


def test_the_read_copy_is_a_snapshot_of_the_published_week(tmp_path):
    warehouse = _warehouse(tmp_path)
    _fill(warehouse, ROWS)
    _snapshot_is_kept(warehouse)


def test_a_copy_to_another_filesystem_is_a_plain_copy(tmp_path):
    """Across devices the kernel cannot share blocks (``EXDEV``): the bytes are copied."""
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) beside the test's folder")
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 << 20))
    target = other / f"customer_assets_copy_{os.getpid()}.bin"
    try:
        copy_file(source, target)
        assert target.read_bytes() == source.read_bytes()
        copy_file(source, target)  # replaces what was there
        assert target.stat().st_size == source.stat().st_size
    finally:
        target.unlink(missing_ok=True)


@pytest.fixture
def reflink_folder(tmp_path):
    """A folder on a small XFS filesystem with reflinks (a loop device), where this machine lets
    the tests make one: root, ``mkfs.xfs`` (Debian's xfsprogs) and loop devices."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("an XFS filesystem needs root and mkfs.xfs (apt-get install xfsprogs)")
    image, mount = tmp_path / "xfs.img", tmp_path / "xfs"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(512 << 20)
    made = subprocess.run(
        ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True
    )
    mounted = (
        made.returncode == 0
        and (
            subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip(f"this machine does not mount a loop device here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def test_on_a_filesystem_with_reflinks_the_copy_takes_no_space(reflink_folder):
    """The copy shares the warehouse's blocks: publishing a week costs neither the file's size in
    disk nor the time to write it, however long the history in the file."""
    warehouse = _warehouse(reflink_folder)
    _fill(warehouse, ROWS)
    warehouse.execute("CHECKPOINT")
    size = Path(warehouse.database).stat().st_size
    assert size > 16 << 20
    before = _free_bytes(reflink_folder)
    warehouse.publish_read_copy()
    assert before - _free_bytes(reflink_folder) < size // 10
    assert Path(warehouse.read_copy_path).stat().st_size == size
    _snapshot_is_kept(warehouse)


@pytest.fixture
def small_disk(tmp_path):
    """A real 40 MiB file system (tmpfs) for the warehouse and its copy; skipped where mounting is
    not permitted."""
    with small_tmpfs(tmp_path / "small", 40) as mount:
        yield mount


def _grow_to(warehouse: DuckDBWarehouse, megabytes: int) -> int:
    """Rows added a little at a time, checkpointed each time (a small write-ahead log), until the
    file holds ``megabytes``; the rows it holds."""
    warehouse.execute("CREATE TABLE IF NOT EXISTS facts (id BIGINT, label VARCHAR)")
    rows = 0
    while Path(warehouse.database).stat().st_size < megabytes << 20:
        warehouse.execute(
            "INSERT INTO facts SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) "
            f"FROM range({rows}, {rows + 20_000}) t(i)"
        )
        warehouse.execute("CHECKPOINT")
        rows += 20_000
    return rows


@pytest.mark.parametrize("erasure", [False, True], ids=["week", "erasure"])
def test_a_copy_that_does_not_fit_leaves_no_partial_file(small_disk, erasure):
    """On a disk with room for the warehouse but not for its copy (ext4 copies every byte): the
    step fails naming the disk, no partial copy is left, and the copy published before stays for a
    week, or is removed after an erasure, since it still holds the customers erased."""
    warehouse = _warehouse(small_disk)
    rows = _grow_to(warehouse, 4)
    published = warehouse.publish_read_copy()
    _grow_to(warehouse, 20)  # now 20 MiB, with less than that free
    with pytest.raises(ReadCopyFailed) as failed:
        warehouse.publish_read_copy(drop_stale=erasure)
    message = failed.value.description
    assert "could not be published" in message and "No space left on device" in message
    assert not failed.value.allow_retries
    assert sorted(p.name for p in small_disk.iterdir()) == (
        ["warehouse.duckdb"] if erasure else ["read.duckdb", "warehouse.duckdb"]
    )
    if erasure:
        assert "was removed" in message
    else:
        assert "copy published before" in message
        with duckdb.connect(published, read_only=True) as con:
            assert con.execute("SELECT count(*) FROM facts").fetchall() == [(rows,)]


def test_a_read_copy_turned_off_is_never_published_and_one_left_from_before_goes(tmp_path):
    """WAREHOUSE_READ_COPY_PATH=off: no copy, so no weekly cost that grows with the file on ext4;
    a copy published while it was on is removed at the next week or erasure, since it would keep
    the customers erased since."""
    warehouse = _warehouse(tmp_path)
    _fill(warehouse, 1_000)
    warehouse.publish_read_copy()
    assert _copy_rows(warehouse.read_copy_path) == (1_000, 999)
    off = warehouse.model_copy(update={"read_copy_off": True})
    for erasure in (False, True):
        assert off.publish_read_copy(drop_stale=erasure) is None
        assert not Path(warehouse.read_copy_path).exists()
        assert not Path(warehouse.read_copy_path + ".tmp").exists()
    assert off.table_url("s", "t") == f"s.t in {Path(warehouse.database).resolve()}"


@pytest.mark.parametrize(
    ("value", "path", "off"),
    [
        (None, "warehouse_read.duckdb", False),
        ("", "warehouse_read.duckdb", False),
        ("elsewhere/analysts.duckdb", "elsewhere/analysts.duckdb", False),
        (" OFF ", "warehouse_read.duckdb", True),
    ],
)
def test_the_local_deployment_reads_the_read_copy_setting(monkeypatch, tmp_path, value, path, off):
    from customer_assets.deployments import resources_for

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("WAREHOUSE_DUCKDB_PATH", raising=False)
    if value is None:
        monkeypatch.delenv("WAREHOUSE_READ_COPY_PATH", raising=False)
    else:
        monkeypatch.setenv("WAREHOUSE_READ_COPY_PATH", value.replace("elsewhere", str(tmp_path)))
    warehouse = resources_for("local")["warehouse"]
    expected = path.replace("elsewhere", str(tmp_path))
    assert Path(warehouse.read_copy_path) == (
        Path(expected) if expected.startswith("/") else Path(warehouse.database).parent / expected
    )
    assert warehouse.read_copy_off is off
