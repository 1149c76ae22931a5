"""The week's rows made ready for BigQuery before it is touched: the column types as loaded and as
declared, the partition column and every row's week checked, and the load job's Parquet file
written. A week that cannot be loaded fails here, with nothing in BigQuery changed.

A ``StoredFrame`` (the week in a Parquet file) is never read whole: its week bounds are checked a
batch at a time and the load file is written a batch at a time to a temporary file (deleted when
closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pandas as pd

from customer_assets.frames import StoredFrame, slices
from customer_assets.io_managers.bigquery_types import frame_types, to_parquet_file
from customer_assets.io_managers.declared import declared_types, holds_values, table_types


def week_payload(
    context,
    obj: pd.DataFrame | StoredFrame,
    frame: pd.DataFrame,
    target_id: str,
    column: str,
    window: tuple[datetime, datetime],
) -> tuple[dict[str, str], dict[str, str], Any]:
    """Everything that can be checked without BigQuery, checked before touching it; returns the
    column types as loaded, the types a new table is created with (the model's: see
    ``declared``), and the load job's Parquet file. A column holding no value is loaded as its
    declared type.

    No repair of an existing table: BigQuery has no NULL type, and an object column is STRING
    whatever it holds (``bigquery_type``), so an empty week never gave it an untyped column.
    """
    stored = obj if isinstance(obj, StoredFrame) else None
    incoming = frame_types(frame)
    declared, casts = table_types(
        declared_types(context, frame),
        incoming,
        "bigquery",
        lambda name: holds_values(obj, name),
    )
    incoming.update(casts)
    if column not in incoming:
        raise ValueError(f"{target_id}: partition column {column!r} is not in the frame")
    if incoming[column] not in ("TIMESTAMP", "DATETIME"):
        raise ValueError(
            f"{target_id}: partition column {column!r} is {incoming[column]}, not a timestamp"
        )
    _check_frame_in_week(
        stored.batches([column]) if stored is not None else [frame], column, *window, target_id
    )
    # A value Arrow cannot convert fails here, not half-way.
    frames = stored.batches() if stored is not None else slices(frame)
    return incoming, declared, to_parquet_file(_blank(frames, casts), incoming)


def _check_frame_in_week(
    frames: Iterable[pd.DataFrame], column: str, start: datetime, end: datetime, where: str
) -> None:
    rows, outside, examples = 0, 0, []
    for frame in frames:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC")
            lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        else:
            lo, hi = pd.Timestamp(start).tz_convert(None), pd.Timestamp(end).tz_convert(None)
        bad = values.isna() | (values < lo) | (values >= hi)
        rows += len(frame)
        outside += int(bad.sum())
        examples += values[bad].head(3 - len(examples)).tolist()
    if outside:
        raise ValueError(
            f"{where}: {outside} of {rows} rows have {column} outside the week "
            f"[{start.isoformat()}, {end.isoformat()}) or null; nothing was loaded. "
            f"First: {examples}"
        )


def _blank(frames: Iterable[pd.DataFrame], casts: dict[str, str]) -> Iterator[pd.DataFrame]:
    """The frames with each cast column (it holds no value) as None objects, which Arrow writes as
    nulls of any type (a NaN column would not become a STRING or a TIMESTAMP)."""
    for frame in frames:
        yield (
            frame.assign(
                **{name: pd.Series(None, index=frame.index, dtype=object) for name in casts}
            )
            if casts
            else frame
        )
