"""What the copy behind the analysts' read copy of the local warehouse costs as the warehouse grows:
``python -m benchmarks.read_copy --dir /data --sizes-gb 0.5,1,2,4``.

Each week ``DuckDBWarehouse.publish_read_copy`` checkpoints the warehouse file and copies it with
``duck.copy_file`` (``copy_file_range``); before, it used ``shutil.copyfile``. For each size, a file
of that many random bytes (a copy does not read what the bytes mean) is copied both ways, in turn,
and the seconds and the disk each took are printed. On a filesystem that shares blocks (XFS, btrfs)
``copy_file`` is a reflink, constant in time and disk; on ext4 both copy the bytes. ``--dir``
decides the filesystem measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from customer_assets.duck import copy_file

CHUNK = 64 << 20


def _write(path: Path, size: int) -> None:
    """``path`` made ``size`` bytes of random data, written once (XFS keeps space reserved past the
    end of a file appended to again and again, which would blur the disk figures)."""
    with path.open("wb") as f:
        while f.tell() < size:
            f.write(os.urandom(min(CHUNK, size - f.tell())))
        f.flush()
        os.fsync(f.fileno())


def _free(folder: Path) -> int:
    """Free bytes once the filesystem has settled: written back, and blocks of removed files
    freed (XFS frees them in the background)."""
    os.sync()
    free, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        stat = os.statvfs(folder)
        now = stat.f_bavail * stat.f_frsize
        if now == free:
            return now
        free = now
        time.sleep(0.5)
    return free


def _timed(folder: Path, copy, source: Path, target: Path) -> tuple[float, float]:
    """Seconds and MiB of disk a copy took (the target removed after). Each starts with nothing
    left to write back (``_free``), so that neither pays for the other's writes."""
    before = _free(folder)
    start = time.perf_counter()
    copy(source, target)
    seconds = time.perf_counter() - start
    used = (before - _free(folder)) / (1 << 20)
    target.unlink()
    return seconds, used


def measure(folder: Path, sizes_gb: list[float]) -> list[dict]:
    source, rows = folder / "warehouse.duckdb", []
    for size in sizes_gb:
        _write(source, int(size * (1 << 30)))
        plain_s, plain_mb = _timed(folder, shutil.copyfile, source, folder / "plain.duckdb")
        copy_s, copy_mb = _timed(folder, copy_file, source, folder / "read.duckdb")
        rows.append(
            {
                "file_mb": source.stat().st_size >> 20,
                "copyfile_s": round(plain_s, 4),
                "copyfile_disk_mb": round(plain_mb),
                "copy_file_s": round(copy_s, 4),
                "copy_file_disk_mb": round(copy_mb),
            }
        )
        print(
            f"{rows[-1]['file_mb']:>8,} MiB   shutil.copyfile {plain_s:8.3f} s {plain_mb:8,.0f} MiB"
            f"   duck.copy_file {copy_s:8.4f} s {copy_mb:8,.0f} MiB",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="a folder on the filesystem to measure (default: a temp dir)")
    parser.add_argument("--sizes-gb", default="0.25,0.5,1,2")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        print(f"files in {folder}")
        return measure(Path(folder), [float(s) for s in args.sizes_gb.split(",")])


if __name__ == "__main__":
    main()
