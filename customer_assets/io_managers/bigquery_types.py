"""Columns between pandas, Arrow and BigQuery: the type of each dtype, and the load job's Parquet file.

=============================  ==========  =====================================================
pandas dtype                   BigQuery    note
=============================  ==========  =====================================================
object / string / category     STRING
float*                         FLOAT64
int* (numpy or nullable Int)   INT64
bool / boolean                 BOOL
datetime64[ns, <tz>]           TIMESTAMP   an instant
datetime64[ns] (naive)         DATETIME    UTC wall time, no zone: the same as DuckDB's naive
                                           TIMESTAMP, and read back naive. It is compared with
                                           ``DATETIME(@start, 'UTC')``, never with a TIMESTAMP.
=============================  ==========  =====================================================
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# BigQuery reports legacy names for some types; compare on the standard SQL names.
_STANDARD_TYPE = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "NUMERIC": "NUMERIC"}


def standard_type(field_type: str) -> str:
    return _STANDARD_TYPE.get(field_type.upper(), field_type.upper())


def bigquery_type(dtype) -> str:
    """The BigQuery type of a pandas dtype (see the module docstring)."""
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOL"
    if pd.api.types.is_integer_dtype(dtype):
        return "INT64"
    if pd.api.types.is_float_dtype(dtype):
        return "FLOAT64"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMP"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "DATETIME"
    if (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return "STRING"
    raise TypeError(f"no BigQuery type for pandas dtype {dtype}")


def frame_types(frame: pd.DataFrame) -> dict[str, str]:
    types = {}
    for name, dtype in frame.dtypes.items():
        try:
            types[str(name)] = bigquery_type(dtype)
        except TypeError as err:
            raise TypeError(f"column {name!r}: {err}") from None
    return types


_ARROW_TYPES = {
    "STRING": pa.string(),
    "FLOAT64": pa.float64(),
    "INT64": pa.int64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
}


def _arrow_schema(types: dict[str, str]) -> pa.Schema:
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in types.items()])


def to_parquet_file(frames: Iterable[pd.DataFrame], types: dict[str, str]) -> IO[bytes]:
    """The frames as one Parquet file, a row group each, with the Arrow types BigQuery loads into
    ``types`` (microsecond timestamps), in a temporary file (gone once closed), rewound.

    A naive timestamp is written without a zone (``isAdjustedToUTC=false``), which BigQuery loads
    into DATETIME; an aware one in UTC, loaded into TIMESTAMP. Sub-microsecond digits are dropped,
    as BigQuery keeps microseconds.
    """
    schema = _arrow_schema(types)
    # returned open: the caller's load reads it, and closing it deletes it
    sink = tempfile.TemporaryFile(prefix="bigquery_load_", suffix=".parquet")  # noqa: SIM115
    try:
        with pq.ParquetWriter(sink, schema, compression="snappy") as writer:
            for frame in frames:
                writer.write_table(
                    pa.Table.from_pandas(frame, schema=schema, preserve_index=False, safe=False)
                )
    except BaseException:
        sink.close()
        raise
    sink.seek(0)
    return sink
