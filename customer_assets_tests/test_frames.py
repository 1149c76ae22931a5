"""Writing a query's batches to a Parquet file (``frames.write_batches``, which
``WarehouseSQL.to_parquet`` uses for the step's scratch files of customer rows)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_assets.frames import BATCH_ROWS, write_batches


def _batch(start: int, rows: int) -> pa.RecordBatch:
    ids = [f"C{i:08d}" for i in range(start, start + rows)]
    return pa.record_batch({"customer_id": ids, "total_usd": [float(i) for i in range(rows)]})


def test_no_rows_write_no_file(tmp_path):
    path = tmp_path / "totals.parquet"
    assert write_batches(iter([]), path) == 0
    assert write_batches(iter([_batch(0, 0), _batch(0, 0)]), path) == 0
    assert not path.exists()


def test_the_rows_are_written_in_order_in_row_groups_of_the_batch_size(tmp_path):
    path = tmp_path / "totals.parquet"
    batches = [_batch(start, 2_048) for start in range(0, 2_048 * 150, 2_048)]  # DuckDB's size
    assert write_batches(iter(batches), path) == 2_048 * 150
    file = pq.ParquetFile(path)
    assert file.metadata.num_rows == 2_048 * 150
    assert file.metadata.num_row_groups == -(-(2_048 * 150) // BATCH_ROWS)
    table = file.read()
    assert table.column("customer_id").to_pylist() == [f"C{i:08d}" for i in range(2_048 * 150)]


def test_a_query_failing_part_way_leaves_no_file(tmp_path):
    """The rows are customers': a half-written file is neither read nor left on disk."""
    path = tmp_path / "totals.parquet"

    def failing():
        yield _batch(0, BATCH_ROWS + 1)  # one row group written to the file already
        raise RuntimeError("the warehouse went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_batches(failing(), path)
    assert not path.exists()
