"""The local Parquet IO manager: atomic files per asset and week, inputs that read only some
columns, and week-sized data written and read in batches."""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_assets import frames
from customer_assets.frames import FrameBatches, StoredFrame
from customer_assets.io_managers.parquet import ParquetIOManager, staged_path
from customer_assets.settings import PipelineSettings

KEY = dg.AssetKey(["etl", "frame"])


def _manager(root) -> ParquetIOManager:
    """Intermediates in ``root`` (DATA_DIR), as the pipeline's settings configure them."""
    data = str(root)
    return ParquetIOManager(
        settings=PipelineSettings(data_dir=data, reports_dir=data, etl_log_dir=data)
    )


def test_round_trip_keeps_values_and_text_dtype(tmp_path):
    manager = _manager(tmp_path)
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None], "c": [0.5, 1.5]})
    manager.handle_output(dg.build_output_context(asset_key=KEY), frame)
    assert [p.name for p in (tmp_path / "etl" / "frame").iterdir()] == [
        "all.parquet"
    ]  # no temporary left
    back = manager.load_input(dg.build_input_context(asset_key=KEY))
    pd.testing.assert_frame_equal(back, frame)
    assert back["b"].dtype == "str" and pd.isna(back.loc[1, "b"])


def test_an_input_can_ask_for_some_columns_only(tmp_path):
    manager = _manager(tmp_path)
    manager.handle_output(
        dg.build_output_context(asset_key=KEY), pd.DataFrame({"a": [1], "b": ["x"], "c": [2.0]})
    )
    back = manager.load_input(
        dg.build_input_context(asset_key=KEY, definition_metadata={"columns": ["c", "a"]})
    )
    assert back.columns.tolist() == ["c", "a"] and back.loc[0, "c"] == 2.0


def _stored_input(manager):
    return manager.load_input(
        dg.build_input_context(
            asset_key=KEY,
            dagster_type=dg.DagsterType(
                type_check_fn=lambda _c, _v: True, name="Stored", typing_type=StoredFrame
            ),
        )
    )


def _rows(start, n):
    return pd.DataFrame(
        {
            "id": [f"T{i}" for i in range(start, start + n)],
            "amount": [float(i) for i in range(n)],
            "at": pd.date_range("2026-11-16", periods=n, freq="h", tz="UTC"),
        }
    )


def test_batches_are_written_as_row_groups_and_read_back_in_batches(tmp_path):
    manager = _manager(tmp_path)
    parts = [_rows(0, 5), _rows(5, 5), _rows(10, 2)]
    seen = []
    out = FrameBatches(
        iter(parts), check=lambda b: seen.append(len(b)), unique=["id"], summary=lambda: {"k": 1}
    )
    context = dg.build_output_context(asset_key=KEY)
    manager.handle_output(context, out)
    assert seen == [5, 5, 2] and out.rows == 12
    stored = _stored_input(manager)
    assert (
        isinstance(stored, StoredFrame)
        and len(stored) == 12
        and stored.columns == ["id", "amount", "at"]
    )
    whole = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(stored.read(), whole)
    again = list(stored.batches(batch_rows=4))
    assert [len(b) for b in again] == [
        4,
        4,
        4,
    ]  # batches of the reader's size, whatever the writer's
    pd.testing.assert_frame_equal(pd.concat(again, ignore_index=True), whole)
    assert str(again[0]["at"].dtype) == "datetime64[ns, UTC]" and again[0]["id"].dtype == "str"
    pd.testing.assert_frame_equal(stored.empty(), whole.iloc[:0])


def test_an_empty_week_is_one_empty_batch_and_reads_back_empty(tmp_path):
    manager = _manager(tmp_path)
    manager.handle_output(dg.build_output_context(asset_key=KEY), FrameBatches([_rows(0, 0)]))
    stored = _stored_input(manager)
    batches = list(stored.batches())
    assert (
        len(stored) == 0
        and len(batches) == 1
        and batches[0].columns.tolist() == ["id", "amount", "at"]
    )


@pytest.mark.parametrize(
    "parts,check,message",
    [
        (
            [_rows(0, 3), _rows(2, 3)],
            None,
            r"repeat across batches in columns that must be unique: \{'id': 1\}",
        ),
        (
            [_rows(0, 3), _rows(3, 3).rename(columns={"amount": "usd"})],
            None,
            "differ from the first batch",
        ),
        (
            [_rows(0, 3), _rows(3, 3)],
            lambda b: (
                (_ for _ in ()).throw(ValueError("bad batch")) if b["id"].iloc[0] == "T3" else None
            ),
            "bad batch",
        ),
        ([], None, "no batch to write"),
    ],
)
def test_a_failing_batch_leaves_the_previous_file_untouched(tmp_path, parts, check, message):
    manager = _manager(tmp_path)
    before = _rows(100, 1)
    manager.handle_output(dg.build_output_context(asset_key=KEY), before)
    with pytest.raises(ValueError, match=message):
        manager.handle_output(
            dg.build_output_context(asset_key=KEY),
            FrameBatches(iter(parts), check=check, unique=["id"]),
        )
    assert [p.name for p in (tmp_path / "etl" / "frame").iterdir()] == [
        "all.parquet"
    ]  # no temporary left
    pd.testing.assert_frame_equal(_stored_input(manager).read(), before)


def test_batches_are_read_once():
    out = FrameBatches([_rows(0, 1)])
    assert len(list(out)) == 1
    with pytest.raises(RuntimeError, match="once only"):
        list(out)


def test_a_frame_is_written_a_slice_at_a_time_with_one_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(frames, "BATCH_ROWS", 2)
    manager = _manager(tmp_path)
    frame = _rows(0, 5).assign(note=pd.Series([None, None, "late text", None, "x"], dtype=object))
    manager.handle_output(dg.build_output_context(asset_key=KEY), frame)
    stored = _stored_input(manager)
    assert pq.ParquetFile(stored.path).num_row_groups == 3
    back = stored.read()
    pd.testing.assert_frame_equal(back.drop(columns="note"), frame.drop(columns="note"))
    assert back["note"].tolist()[2] == "late text" and back["note"].isna().sum() == 3


@pytest.mark.parametrize(
    "values,repeats",
    [
        (["a", "b", "c"], 0),
        (["a", "b", "a", "a"], 2),
        (["a", None, None, "b"], 1),
        ([None], 0),
        ([], 0),
        (["x", None, "x", None], 2),
    ],
)
def test_duplicated_values_counts_repeats_like_pandas(tmp_path, values, repeats):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": pa.array(values, pa.string())}), path)
    assert frames.duplicated_values(path, ["id"]) == {"id": repeats}
    assert int(pd.Series(values, dtype=object).duplicated().sum()) == repeats


def test_a_stored_frame_replaced_while_read_is_an_error(tmp_path):
    """The transform reads its input twice (week metrics, then batches): never from two versions of
    it."""
    path = tmp_path / "week.parquet"
    _rows(0, 3).to_parquet(path)
    stored = StoredFrame(path)
    assert len(stored.read()) == 3
    replacement = tmp_path / "new.parquet"
    _rows(10, 4).to_parquet(replacement)
    replacement.replace(path)  # another run of the same week wrote it meanwhile
    with pytest.raises(RuntimeError, match="replaced or removed while this step read it"):
        list(stored.batches())
    path.unlink()
    with pytest.raises(RuntimeError, match="replaced or removed"):
        stored.read()


def _arrow_rows(start, n) -> pa.RecordBatch:
    return pa.RecordBatch.from_pandas(_rows(start, n), preserve_index=False)


def test_a_sink_writes_batches_as_they_come_in_row_groups_of_its_size(tmp_path):
    """``ParquetSink``: the stream's blocks gathered into row groups of about ``group_rows`` as they
    arrive, each block checked first; the file reads back as the blocks in order."""
    seen = []
    sink = frames.ParquetSink(
        tmp_path / "w.parquet", check=lambda b: seen.append(b.num_rows), group_rows=4
    )
    on_disk, parts = [], [_rows(start, min(3, 10 - start)) for start in range(0, 10, 3)]
    for part in parts:
        sink.write(pa.RecordBatch.from_pandas(part, preserve_index=False))
        on_disk.append(sink.rows)
    assert on_disk == [0, 6, 6, 10]  # written as they came, not at the end
    stored = sink.close()
    assert seen == [3, 3, 3, 1] and len(stored) == 10
    assert pq.ParquetFile(stored.path).metadata.num_row_groups == 2
    pd.testing.assert_frame_equal(stored.read(), pd.concat(parts, ignore_index=True))


def test_a_sink_restarted_holds_each_row_once_and_discarded_leaves_nothing(tmp_path):
    sink = frames.ParquetSink(tmp_path / "w.parquet", group_rows=2)
    sink.write(_arrow_rows(0, 3))
    sink.restart()  # the stream is read again from its first row
    assert not sink.path.exists()
    sink.write(_arrow_rows(0, 3))
    sink.write(_arrow_rows(3, 2))
    assert sink.close().read()["id"].tolist() == [f"T{i}" for i in range(5)]

    failing = frames.ParquetSink(tmp_path / "f.parquet", group_rows=2)
    failing.write(_arrow_rows(0, 3))
    failing.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.parquet"]
    with pytest.raises(ValueError, match="no batch was written"):
        frames.ParquetSink(tmp_path / "none.parquet").close()


def test_an_empty_stream_is_an_empty_file_with_its_columns(tmp_path):
    sink = frames.ParquetSink(tmp_path / "w.parquet")
    sink.write(_arrow_rows(0, 0))
    stored = sink.close()
    assert len(stored) == 0 and stored.columns == ["id", "amount", "at"]


def test_a_file_the_step_wrote_is_put_in_place_and_only_from_where_it_was_staged(tmp_path):
    """A step that writes its week itself (the extract, as it streams) returns the staged file as
    a StoredFrame: the IO manager puts it in place whole, and refuses a file from anywhere else
    (which it would move away from its owner)."""
    manager = _manager(tmp_path)
    key = dg.AssetKey(["etl", "raw"])
    staged = staged_path(manager.settings, key, "2026-11-16")
    sink = frames.ParquetSink(staged)
    sink.write(_arrow_rows(0, 3))
    context = dg.build_output_context(asset_key=key, partition_key="2026-11-16")
    with pytest.raises(ValueError, match="must be the file stage_intermediate gave"):
        manager.handle_output(context, StoredFrame(_copy(sink.close(), tmp_path / "x.parquet")))
    manager.handle_output(context, StoredFrame(staged))
    assert sorted(p.name for p in staged.parent.iterdir()) == ["2026-11-16.parquet"]
    assert context.consume_logged_metadata()["dagster/row_count"].value == 3


def _copy(stored: StoredFrame, to) -> str:
    to.write_bytes(stored.path.read_bytes())
    return str(to)


def test_reading_a_file_in_batches_holds_a_row_group_not_the_file(tmp_path):
    """``StoredFrame.batches`` is how a step reads a week it must not hold whole. pyarrow's
    ``ParquetFile.iter_batches`` kept every batch it had read allocated until the iterator ended
    (the whole file: a 10M-row week's 1.2 GB raw file at 1.4 GB before its last batch; apache/arrow
    #39808 reports the same of ``to_batches``): Arrow's allocation while reading stays near one row
    group, whatever the number of groups."""
    path = tmp_path / "week.parquet"
    group = pd.DataFrame(
        {"id": [f"T{i:09d}" for i in range(20_000)], "amount": np.arange(20_000.0)}
    )
    with pq.ParquetWriter(path, pa.Schema.from_pandas(group, preserve_index=False)) as writer:
        for _ in range(30):
            writer.write_table(pa.Table.from_pandas(group, preserve_index=False))
    one_group = pa.Table.from_pandas(group, preserve_index=False).nbytes
    before, most, rows = pa.total_allocated_bytes(), 0, 0
    for batch in StoredFrame(path).batches(batch_rows=7_000):
        most = max(most, pa.total_allocated_bytes() - before)
        rows += len(batch)
    assert rows == 600_000
    assert most < 4 * one_group, (most, one_group)
