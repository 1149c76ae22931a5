"""Warehouse rows as values, to compare two loads of the same tables (BigQuery and DuckDB, a
backfill and the weeks one by one)."""

from __future__ import annotations

import pandas as pd


def values_only(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` without the ``drop`` columns, as plain values: timestamps in UTC at microseconds
    (BigQuery's resolution), categories as objects, on a fresh index."""
    frame = frame.drop(columns=list(drop)).reset_index(drop=True)
    columns = {}
    for name, values in frame.items():
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        elif pd.api.types.is_datetime64_dtype(values.dtype):
            values = values.astype("datetime64[us]")
        elif isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        columns[name] = values
    return pd.DataFrame(columns)
