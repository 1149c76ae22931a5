"""The column types a warehouse table is created with: those its output's pandera model declares.

A table used to take its types from the first frame loaded into it. An empty first week (or a column holding
no value) then gave DuckDB a column of type NULL, and every ordinary week after it failed with a
SchemaMismatchError. The model says what each column is whatever a week holds, so the table is created with
the model's types, and a column that holds no value is loaded as its declared type.

=============================  ==========================  ==========  ==========================================
pandas / pandera dtype         DuckDB (as DESCRIBE says)   BigQuery
=============================  ==========================  ==========  ==========================================
str / object / string          VARCHAR                     STRING
int64                          BIGINT                      INT64       narrower ints as DuckDB reads them
float64                        DOUBLE                      FLOAT64     float32: FLOAT
bool                           BOOLEAN                     BOOL
datetime64[ns, UTC]            TIMESTAMP WITH TIME ZONE    TIMESTAMP   any zone: DuckDB and BigQuery keep instants
datetime64[ns] (naive)         TIMESTAMP                   DATETIME    UTC wall time
=============================  ==========================  ==========  ==========================================

Each is exactly what the managers infer from a frame with values of that dtype (DuckDB from the frame's
Arrow copy, BigQuery from ``bigquery_types.bigquery_type``), so a table created before keeps matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from dagster import OutputContext

from customer_assets.frames import StoredFrame
from customer_assets.io_managers.bigquery_types import bigquery_type
from customer_assets.io_managers.warehouse import schema_columns

# DuckDB's type of a column of Arrow type null: what an empty or all-None object column becomes.
DUCKDB_NULL = '"NULL"'

_DUCKDB_INTS = {
    (True, 1): "TINYINT",
    (True, 2): "SMALLINT",
    (True, 4): "INTEGER",
    (True, 8): "BIGINT",
    (False, 1): "UTINYINT",
    (False, 2): "USMALLINT",
    (False, 4): "UINTEGER",
    (False, 8): "UBIGINT",
}


@dataclass(frozen=True)
class DeclaredColumn:
    dtype: str  # the pandas dtype, as the model (or the frame) names it
    # as DuckDB's DESCRIBE spells it; None: no mapping (the frame's own type is kept)
    duckdb: str | None
    bigquery: str | None  # standard SQL name
    from_model: bool  # False: no model declares the column, the frame's dtype stands in


def duckdb_type(dtype) -> str:
    """The DuckDB type of a pandas dtype: the one DuckDB gives the frame's Arrow copy when it holds
    values."""
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMP WITH TIME ZONE"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "TIMESTAMP"  # the managers load microseconds, whatever the frame's unit
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(dtype):
        numpy = np.dtype(getattr(dtype, "numpy_dtype", dtype))
        return _DUCKDB_INTS[(numpy.kind == "i", numpy.itemsize)]
    if pd.api.types.is_float_dtype(dtype):
        return "FLOAT" if np.dtype(getattr(dtype, "numpy_dtype", dtype)).itemsize <= 4 else "DOUBLE"
    if (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return "VARCHAR"
    raise TypeError(f"no DuckDB type for pandas dtype {dtype}")


def _pandas_dtype(name: str):
    # pandera names its str dtype "str"; numpy would read that as fixed-width unicode.
    return np.dtype(object) if name == "str" else pd.api.types.pandas_dtype(name)


def _column(name: str, dtype, from_model: bool, label: str | None = None) -> DeclaredColumn:
    kinds = []
    for mapping in (duckdb_type, bigquery_type):
        try:
            kinds.append(mapping(dtype))
        except TypeError:
            # a model whose type cannot be declared is a bug to fix, not a type to guess
            if from_model:
                raise TypeError(
                    f"column {name!r} of the model: no warehouse type for {dtype}"
                ) from None
            kinds.append(None)
    return DeclaredColumn(label or str(dtype), kinds[0], kinds[1], from_model)


def declared_types(context: OutputContext, frame: pd.DataFrame) -> dict[str, DeclaredColumn]:
    """The declared type of each column of an output, model columns first, then the frame's other
    columns.

    The model is the output's Dagster type's (a pandera model), else the asset's
    ``dagster/column_schema``; a column neither declares takes the frame's own dtype (``from_model``
    False). ``frame`` may be empty: only its dtypes are read.
    """
    declared: dict[str, DeclaredColumn] = {}
    for column in schema_columns(context):
        if column.name not in declared and column.type:
            declared[column.name] = _column(
                column.name, _pandas_dtype(column.type), True, column.type
            )
    for name, dtype in frame.dtypes.items():
        if str(name) not in declared:
            declared[str(name)] = _column(str(name), dtype, False)
    return declared


def holds_values(obj: pd.DataFrame | StoredFrame, name: str) -> bool:
    """Whether the column holds a value (not null, not NaN). A StoredFrame's column is read (only
    this one), which happens only for a column whose type differs from its declared one."""
    if len(obj) == 0:
        return False
    values = obj[name] if isinstance(obj, pd.DataFrame) else obj.read([name])[name]
    return bool(values.notna().any())


def table_types(
    declared: dict[str, DeclaredColumn],
    incoming: dict[str, str],
    warehouse: str,
    has_values,
    no_type: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The types of the incoming columns in a table created for them, and the incoming columns to
    cast.

    ``warehouse`` is "duckdb" or "bigquery"; ``incoming`` the types the manager read from the frame;
    ``no_type`` the warehouse's type of a column it could not type (DuckDB's NULL). A declared
    column takes the model's type; any other keeps the incoming type, unless the warehouse could not
    type it (then the frame's dtype decides). An incoming column whose type differs and that holds
    no value (``has_values(name)`` False) is cast: it loads into the declared type. One with values
    keeps its own type, so a real difference still stops the load.
    """
    wanted: dict[str, str] = {}
    for name, kind in incoming.items():
        column = declared.get(name)
        typed = getattr(column, warehouse) if column is not None else None
        wanted[name] = typed if typed and (column.from_model or kind == no_type) else kind
    casts = {
        name: kind
        for name, kind in wanted.items()
        if kind != incoming[name] and (incoming[name] == no_type or not has_values(name))
    }
    return wanted, casts
