"""Week-sized datasets that a step never holds whole: read from Parquet in batches, written batch by
batch.

A step that enriches or passes on the week's rows one at a time (the transform, the warehouse load)
takes its input as a :class:`StoredFrame` and returns :class:`FrameBatches`; the Parquet IO manager
hands out the one and writes the other a row group at a time. Memory then follows the batch, not the
week (benchmarks/RESULTS.md has the figures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from customer_assets.logic.duckdb_memory import connect, literal, quoted

BATCH_ROWS = 200_000
# How intermediates are written: they live for one run, so for speed (plain encoding and no
# compression write about twice as fast as dictionary + snappy, at a few times the size).
FAST_PARQUET = {"compression": "none", "use_dictionary": False}


class StoredFrame:
    """A dataset stored as one Parquet file: its shape without reading it, its rows in batches."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._identity = self._stat()
        with pq.ParquetFile(self.path) as parquet:  # the footer once: row count and schema
            self.num_rows: int = parquet.metadata.num_rows
            self.arrow_schema: pa.Schema = parquet.schema_arrow

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"StoredFrame({str(self.path)!r}, rows={self.num_rows})"

    def _stat(self) -> tuple[int, int, int]:
        info = self.path.stat()
        return info.st_ino, info.st_mtime_ns, info.st_size

    def check_unchanged(self) -> None:
        """Raise if the file was replaced since it was handed out (another run of the same week
        wrote it): a step reading it twice must not mix two versions."""
        try:
            same = self._stat() == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise RuntimeError(
                f"{self.path} was replaced or removed while this step read it: was the same week "
                "running twice at once? Rerun the week."
            )

    @property
    def columns(self) -> list[str]:
        return list(self.arrow_schema.names)

    def empty(self) -> pd.DataFrame:
        """No rows, the dtypes a full read would give."""
        return self.arrow_schema.empty_table().to_pandas()

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every row of ``columns`` (all by default) as one frame: for the few columns a week-wide
        step needs."""
        self.check_unchanged()
        return pd.read_parquet(self.path, columns=columns)

    def batches(
        self, columns: list[str] | None = None, batch_rows: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows in file order, ``batch_rows`` at a time; an empty dataset gives one empty
        frame."""
        if self.num_rows == 0:
            yield self.read(columns)
            return
        self.check_unchanged()
        metadata = self.arrow_schema.metadata
        for table in self._tables(columns, batch_rows or BATCH_ROWS):
            # The file's pandas metadata gives back the dtypes it was written from (tz-aware
            # timestamps, str).
            yield table.replace_schema_metadata(metadata).to_pandas()

    def _tables(self, columns: list[str] | None, batch_rows: int) -> Iterator[pa.Table]:
        """The rows in tables of ``batch_rows``, read a row group at a time. Not through
        ``ParquetFile.iter_batches``, which keeps what it has read allocated until it ends (the
        whole file: apache/arrow#39808 reports the same of ``Dataset.to_batches``)."""
        pending: list[pa.Table] = []
        held = 0
        with pq.ParquetFile(self.path) as parquet:  # closed even when the reader stops half-way
            for i in range(parquet.num_row_groups):
                group = parquet.read_row_group(i, columns=columns)
                while group.num_rows:
                    take = min(batch_rows - held, group.num_rows)
                    pending.append(group.slice(0, take))
                    held, group = held + take, group.slice(take)
                    if held == batch_rows:
                        yield pa.concat_tables(pending)
                        pending, held = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def numbered_batches(
        self, columns: list[str] | None = None, batch_rows: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """``batches`` under their rows' positions in the file (0, 1, ...) as their index: a week
        read a batch at a time whose rows are told apart across batches (``logic.validation``'s
        ``Read``)."""
        start = 0
        for batch in self.batches(columns, batch_rows):
            yield batch.set_axis(pd.RangeIndex(start, start + len(batch)))
            start += len(batch)


class CarriedWeek:
    """A week of a table that is mostly an earlier week's: ``frame`` (the rows the week changed or
    added) and every row of the partition starting ``carried_from`` whose ``key`` columns no row of
    ``frame`` holds, with the partition column set to this week. The warehouse IO managers copy
    those rows inside the warehouse, in the load's own transaction: they never pass through Python,
    so a week costs what it changed, not the whole carried table. ``carried_from`` None: nothing is
    carried (a first week), the week is ``frame``."""

    def __init__(self, frame: pd.DataFrame, carried_from, key: Iterable[str]):
        self.frame = frame
        self.carried_from = carried_from
        self.key = tuple(key)
        if not self.key:
            raise ValueError("CarriedWeek needs the key columns that say which rows were changed")
        missing = [c for c in self.key if c not in frame.columns]
        if missing:
            raise ValueError(f"CarriedWeek: key column(s) {missing} not in the frame")

    def __repr__(self) -> str:
        return (
            f"CarriedWeek(rows={len(self.frame)}, carried_from={self.carried_from}, key={self.key})"
        )


class FrameBatches:
    """A dataset produced batch by batch, each batch checked against ``check`` before it is written.

    One pass only: the IO manager consumes it. ``unique`` names columns that must be unique over all
    the batches (checked on the written file before it replaces the old one); ``summary`` is called
    once every batch is written and returns output metadata computed on the way (totals, counts).
    """

    def __init__(
        self,
        batches: Iterable[pd.DataFrame],
        check: Callable[[pd.DataFrame], None] | None = None,
        unique: Iterable[str] = (),
        summary: Callable[[], dict] | None = None,
        name: str = "frame",
    ):
        self._batches = iter(batches)
        self._check = check
        self.unique = list(unique)
        self._summary = summary
        self.name = name
        self.rows = 0
        self._consumed = False

    def __iter__(self) -> Iterator[pd.DataFrame]:
        if self._consumed:
            raise RuntimeError(f"{self.name}: batches can be read once only")
        self._consumed = True
        for batch in self._batches:
            if self._check is not None:
                self._check(batch)
            self.rows += len(batch)
            yield batch

    def summary(self) -> dict:
        return self._summary() if self._summary is not None else {}


def slices(frame: pd.DataFrame, rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The frame in consecutive slices of ``rows`` (views, not copies); an empty frame gives one
    empty slice."""
    rows = rows or BATCH_ROWS
    for start in range(0, max(len(frame), 1), rows):
        yield frame.iloc[start : start + rows]


class ParquetSink:
    """Arrow record batches written to the Parquet file ``path`` as they arrive (a ``BatchSink`` of
    ``copy_query``): a week-sized result that is never held whole, in row groups of about
    ``group_rows``, written as intermediates are (``FAST_PARQUET``, unless ``options`` say
    otherwise). ``check`` rejects a batch by raising. The first batch, even an empty one, fixes
    the file's schema.

    ``restart`` starts the file again (the stream is read again from its first row); ``close``
    finishes it and returns it as a StoredFrame; ``discard`` removes it (on any failure: no half
    week is left behind)."""

    def __init__(
        self,
        path: str | Path,
        check: Callable[[pa.RecordBatch], None] | None = None,
        group_rows: int = BATCH_ROWS,
        **options,
    ):
        self.path = Path(path)
        self._check, self._group_rows = check, group_rows
        self._options = {**FAST_PARQUET, **options}
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = self.row_groups = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._check is not None:
            self._check(batch)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, batch.schema, **self._options)
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            if self._pending_rows >= self._group_rows:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending))
            self.rows += self._pending_rows
            self.row_groups += 1
            self._pending, self._pending_rows = [], 0

    def restart(self) -> None:
        self.discard()
        self.rows = self.row_groups = 0

    def close(self) -> StoredFrame:
        if self._writer is None:
            raise ValueError(f"{self.path}: no batch was written, so the file has no schema")
        self._flush()
        self._writer.close()
        self._writer = None
        return StoredFrame(self.path)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._pending, self._pending_rows = [], 0
        self.path.unlink(missing_ok=True)


def write_batches(batches: Iterable[pa.RecordBatch], path: Path) -> int:
    """Record batches (a warehouse's query, streamed) written to the Parquet file ``path`` through
    a ``ParquetSink``: row groups of ``BATCH_ROWS`` however small the batches come; the number of
    rows. No batch, or only empty ones: no file, 0. A failure part-way leaves no file."""
    sink, rows = ParquetSink(path), 0
    try:
        for batch in batches:
            if batch.num_rows:
                sink.write(batch)
                rows += batch.num_rows
        if rows:
            sink.close()
    except BaseException:
        sink.discard()
        raise
    return rows


def write_parquet_batches(
    batches: Iterable[pd.DataFrame], path: Path, schema: pa.Schema | None = None, **options
) -> tuple[int, int]:
    """Write each frame as a row group of one Parquet file; ``schema``, or else the first batch,
    fixes the columns and types.

    Converting a batch at a time keeps the Arrow copy of the data to one batch. Returns ``(rows,
    row_groups)``. Raises ValueError when there was no batch at all (the file would have no schema)
    or when a batch's columns differ from the first's.
    """
    writer: pq.ParquetWriter | None = None
    rows = groups = 0
    try:
        for batch in batches:
            if writer is None:
                table = pa.Table.from_pandas(batch, schema=schema, preserve_index=False)
                writer = pq.ParquetWriter(path, table.schema, **options)
            else:
                if list(batch.columns) != writer.schema.names:
                    raise ValueError(
                        f"batch columns {list(batch.columns)} differ from the first batch's "
                        f"{writer.schema.names}"
                    )
                table = pa.Table.from_pandas(batch, schema=writer.schema, preserve_index=False)
            writer.write_table(table)
            rows += table.num_rows
            groups += 1
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no batch to write: a dataset needs at least one (possibly empty) batch")
    return rows, groups


def empty_parquet(model, path: Path) -> StoredFrame:
    """A Parquet file of no rows with the columns of the pandera ``model`` (``pa.DataFrameModel``)
    in their types, text as Arrow strings: the stored form of an empty week."""
    frame = pd.DataFrame(
        {
            name: pd.Series(dtype=column.dtype.type)
            for name, column in model.to_schema().columns.items()
        }
    )
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(schema):
        if pa.types.is_null(field.type):
            schema = schema.set(i, field.with_type(pa.string()))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), path)
    return StoredFrame(path)


def duplicated_values(path: Path, columns: Iterable[str]) -> dict[str, int]:
    """Per column of a Parquet file, how many rows repeat a value already seen (0 = unique; nulls
    count as one value, as in pandas' ``duplicated``).

    Compares 64-bit hashes (DuckDB reads the file; 8 bytes a row, not a hash table of the values)
    and counts exactly only among rows whose hash repeats.
    """
    found = {}
    source = literal(path)
    with connect() as con:
        for column in columns:
            name = quoted(column)
            hashes = con.execute(
                f"SELECT hash({name}) AS h FROM read_parquet({source})"
            ).fetchnumpy()["h"]
            hashes = np.sort(np.asarray(hashes, dtype=np.uint64))
            repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
            if not len(repeated):
                found[column] = 0
                continue
            con.register("repeated", pa.table({"h": pa.array(repeated, pa.uint64())}))
            found[column] = con.execute(
                f"SELECT count(*) - count(DISTINCT {name}) - (CASE WHEN count(*) > count({name}) THEN 1 ELSE 0 END)"
                f" FROM read_parquet({source}) WHERE hash({name}) IN (SELECT h FROM repeated)"
            ).fetchall()[0][0]
            con.unregister("repeated")
    return found


def query_stored(path: Path, view: str, sql: str) -> pd.DataFrame:
    """DuckDB's ``sql`` over the Parquet file ``path``, seen as the view ``view`` with ``_rn``
    (each row's place in the file): a week-wide aggregate computed by DuckDB reading the file, the
    week never a DataFrame."""
    with connect() as con:
        con.execute(
            f"CREATE VIEW {quoted(view)} AS SELECT *, file_row_number AS _rn "
            f"FROM read_parquet({literal(path)}, file_row_number = true)"
        )
        return con.sql(sql).to_arrow_table().to_pandas()
