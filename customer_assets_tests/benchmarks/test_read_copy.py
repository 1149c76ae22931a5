"""The read-copy benchmark keeps working: two tiny sizes (not a timed test)."""

from benchmarks.read_copy import main


def test_read_copy_benchmark_copies_each_size_both_ways(tmp_path):
    rows = main(["--dir", str(tmp_path), "--sizes-gb", "0.001,0.004"])
    assert [row["file_mb"] for row in rows] == [1, 4]
    for row in rows:
        assert row["copyfile_s"] >= 0 and row["copy_file_s"] >= 0
        # a plain copy takes the file's size on any filesystem
        assert row["copyfile_disk_mb"] >= row["file_mb"] - 1
    assert list(tmp_path.iterdir()) == []  # its files removed
