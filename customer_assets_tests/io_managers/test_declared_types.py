"""Warehouse tables get the column types their pandera model declares, whatever the first week
holds.

An empty first week (or a column with no value, such as ``imputed_fields``) used to create a DuckDB
column of type NULL, and the next ordinary week then failed for ever with a SchemaMismatchError;
BigQuery took its types from the first frame's dtypes. Both managers now create a table with the
declared types, cast a column that holds no value to its declared type, and DuckDB repairs a NULL
column left by the old code.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pytest
from pandera.typing import Series

from customer_assets import dagster_types as frame_types_module
from customer_assets.dagster_types import (
    UnifiedCustomerProfilesType,
    column_schema,
    frame_check,
    frame_type,
    stored_frame_type,
)
from customer_assets.frames import StoredFrame
from customer_assets.io_managers.duckdb_incoming import to_arrow
from customer_assets.io_managers.duckdb_warehouse import DuckDBWarehouseIOManager
from customer_assets.partitions import weekly_partitions
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets.schemas import UTC_TS, UnifiedCustomerProfiles
from customer_assets_tests.io_managers.test_bigquery_warehouse import (
    PROJECT,
    WEEK_A,
    WEEK_B,
    dataset,
    failure_text,
    manager,
    run,
)

WEEK, NEXT_WEEK = "2026-11-16", "2026-11-23"
DUCKDB_DECLARED = {
    "customer_id": "VARCHAR",
    "visits": "BIGINT",
    "value": "DOUBLE",
    "is_current": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "week_start": "TIMESTAMP",
    "imputed_fields": "VARCHAR",
}
BIGQUERY_DECLARED = {
    "customer_id": "STRING",
    "visits": "INT64",
    "value": "FLOAT64",
    "is_current": "BOOL",
    "timestamp": "TIMESTAMP",
    "week_start": "DATETIME",
    "imputed_fields": "STRING",
}


class Visits(pa.DataFrameModel):
    """A model with every dtype the project's models use (str, int, float, bool, zoned and naive
    timestamps)."""

    customer_id: Series[str] = pa.Field(nullable=True)
    visits: Series[int]
    value: Series[float] = pa.Field(nullable=True)
    is_current: Series[bool]
    timestamp: Series[UTC_TS]
    week_start: Series[pd.Timestamp]
    imputed_fields: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


VisitsType = frame_type(Visits)
# as weekly_transactions
VisitsFileType = stored_frame_type("VisitsFile", frame_check(Visits), VisitsType.metadata)


def visits(week: str, n: int = 3, imputed: bool = True) -> pd.DataFrame:
    """``n`` rows of the week with the dtypes pandera gives them; ``imputed=False``:
    ``imputed_fields`` all None."""
    start = pd.Timestamp(week, tz="UTC")
    return pd.DataFrame(
        {
            "customer_id": pd.Series([f"C{i}" for i in range(n)], dtype=object),
            "visits": pd.Series(range(n), dtype="int64"),
            "value": pd.Series([1.5 * i for i in range(n)], dtype="float64"),
            "is_current": pd.Series([i % 2 == 0 for i in range(n)], dtype=bool),
            "timestamp": pd.Series(
                [start + pd.Timedelta(hours=i + 1) for i in range(n)], dtype="datetime64[ns, UTC]"
            ),
            "week_start": pd.Series([start.tz_convert(None)] * n, dtype="datetime64[ns]"),
            "imputed_fields": pd.Series(
                ["lifetime_value" if imputed else None for _ in range(n)], dtype=object
            ),
        }
    )


def stored(tmp_path, frame: pd.DataFrame, name: str) -> StoredFrame:
    frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    return StoredFrame(tmp_path / f"{name}.parquet")


def empty_object_week() -> pd.DataFrame:
    """No rows, every column an object column: what a week with no data looks like before pandera
    coerces (the coercion happens in the type check, on a copy: the IO manager receives this
    frame)."""
    return pd.DataFrame({name: pd.Series([], dtype=object) for name in DUCKDB_DECLARED})


# --------------------------------------------------------------------------------------------------
# DuckDB


def duck_asset(
    frames: dict[str, object], name: str = "weekly_visits", dagster_type=VisitsType, **metadata
):
    @dg.asset(
        name=name,
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        dagster_type=dagster_type,
        metadata={"partition_expr": "timestamp", **metadata},
    )
    def _asset(context):
        return frames[context.partition_key]

    return _asset


def duck_load(tmp_path, asset, week: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    manager = DuckDBWarehouseIOManager(
        warehouse=DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb")),
        reports_dir=str(tmp_path / "reports"),
    )
    return dg.materialize(
        [asset],
        partition_key=week,
        resources={"warehouse_io_manager": manager},
        raise_on_error=raise_on_error,
    )


def duck_types(tmp_path, table: str = "weekly_visits") -> dict[str, str]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'customer_analytics' AND table_name = ? "
                "ORDER BY ordinal_position",
                [table],
            ).fetchall()
        )


def duck_rows(tmp_path, table: str = "weekly_visits", order: str = "timestamp") -> pd.DataFrame:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM customer_analytics.{table} ORDER BY {order}").df()


def texts(values: pd.Series) -> list:
    """The values with None for a missing one (a str column holds NaN, an object column None)."""
    return [None if pd.isna(v) else v for v in values]


@pytest.mark.parametrize(
    "first", [empty_object_week(), visits(WEEK, n=0)], ids=["object-columns", "coerced-dtypes"]
)
def test_duckdb_an_empty_first_week_creates_the_declared_types_and_the_next_week_loads(
    tmp_path, first
):
    asset = duck_asset({WEEK: first, NEXT_WEEK: visits(NEXT_WEEK)})
    duck_load(tmp_path, asset, WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED
    duck_load(tmp_path, asset, NEXT_WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED
    assert duck_rows(tmp_path)["customer_id"].tolist() == ["C0", "C1", "C2"]


def test_duckdb_an_empty_stored_first_week_creates_the_declared_types(tmp_path):
    frames = {
        WEEK: stored(tmp_path, empty_object_week(), "empty"),
        NEXT_WEEK: stored(tmp_path, visits(NEXT_WEEK), "next"),
    }
    asset = duck_asset(frames, dagster_type=VisitsFileType)
    duck_load(tmp_path, asset, WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED
    duck_load(tmp_path, asset, NEXT_WEEK)
    assert len(duck_rows(tmp_path)) == 3


@pytest.mark.parametrize("as_file", [False, True], ids=["frame", "parquet"])
def test_duckdb_a_column_with_no_value_loads_as_varchar(tmp_path, as_file):
    frames = {WEEK: visits(WEEK, imputed=False), NEXT_WEEK: visits(NEXT_WEEK)}
    if as_file:
        frames = {week: stored(tmp_path, frame, week) for week, frame in frames.items()}
    asset = duck_asset(frames, dagster_type=VisitsFileType if as_file else VisitsType)
    duck_load(tmp_path, asset, WEEK)
    assert duck_types(tmp_path)["imputed_fields"] == "VARCHAR"
    duck_load(tmp_path, asset, NEXT_WEEK)
    assert texts(duck_rows(tmp_path)["imputed_fields"]) == [None] * 3 + ["lifetime_value"] * 3


def test_duckdb_a_null_column_left_by_the_old_code_is_repaired_by_the_next_load(tmp_path):
    old = visits(WEEK, imputed=False)
    # what the old code did on its first load
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE SCHEMA customer_analytics")
        con.register(
            "incoming", to_arrow(old, pa_arrow.Schema.from_pandas(old, preserve_index=False))
        )
        con.execute(
            "CREATE TABLE customer_analytics.weekly_visits AS SELECT * FROM incoming LIMIT 0"
        )
        con.execute("INSERT INTO customer_analytics.weekly_visits BY NAME SELECT * FROM incoming")
    assert duck_types(tmp_path)["imputed_fields"] == '"NULL"'

    asset = duck_asset({NEXT_WEEK: visits(NEXT_WEEK)})
    duck_load(tmp_path, asset, NEXT_WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED
    loaded = duck_rows(tmp_path)
    assert texts(loaded["imputed_fields"]) == [None] * 3 + ["lifetime_value"] * 3
    assert loaded["customer_id"].tolist() == ["C0", "C1", "C2"] * 2


def test_duckdb_a_null_column_is_repaired_even_when_the_next_week_has_no_value_either(tmp_path):
    old = visits(WEEK, n=0)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA customer_analytics")
        con.register(
            "incoming", to_arrow(old, pa_arrow.Schema.from_pandas(old, preserve_index=False))
        )
        con.execute(
            "CREATE TABLE customer_analytics.weekly_visits AS SELECT * FROM incoming LIMIT 0"
        )
    duck_load(tmp_path, duck_asset({NEXT_WEEK: visits(NEXT_WEEK, imputed=False)}), NEXT_WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED


def test_duckdb_the_real_profiles_model_on_an_empty_first_week(tmp_path):
    """weekly_customer_profiles: an empty week (as the profiles step returns it) then an ordinary
    one."""
    model = UnifiedCustomerProfiles.to_schema()
    empty = pd.DataFrame(
        {
            name: pd.Series([], dtype=object if str(c.dtype) == "str" else str(c.dtype))
            for name, c in model.columns.items()
        }
    )
    row = {
        name: {"str": "x", "int64": 1, "float64": 1.0, "bool": True}.get(str(c.dtype))
        for name, c in model.columns.items()
    }
    row.update(
        status="active",
        value_tier="Gold",
        imputed_fields="",
        value_tier_source="crm",
        status_source="crm",
        week_start=pd.Timestamp(NEXT_WEEK),
    )
    frames = {WEEK: empty, NEXT_WEEK: pd.DataFrame([row]).astype({"week_start": "datetime64[ns]"})}
    asset = duck_asset(
        frames,
        name="weekly_customer_profiles",
        dagster_type=UnifiedCustomerProfilesType,
        partition_expr="week_start",
    )
    duck_load(tmp_path, asset, WEEK)
    types = duck_types(tmp_path, "weekly_customer_profiles")
    assert types["imputed_fields"] == "VARCHAR" and types["customer_id"] == "VARCHAR"
    assert '"NULL"' not in types.values()
    duck_load(tmp_path, asset, NEXT_WEEK)
    assert len(duck_rows(tmp_path, "weekly_customer_profiles", order="week_start")) == 1


def test_duckdb_the_column_schema_metadata_declares_when_the_type_has_no_model(tmp_path):
    asset = duck_asset(
        {WEEK: empty_object_week(), NEXT_WEEK: visits(NEXT_WEEK)},
        dagster_type=None,
        **{"dagster/column_schema": column_schema(Visits)},
    )
    duck_load(tmp_path, asset, WEEK)
    assert duck_types(tmp_path) == DUCKDB_DECLARED
    duck_load(tmp_path, asset, NEXT_WEEK)


def test_duckdb_without_a_model_the_frame_decides_and_a_column_with_no_value_is_varchar(tmp_path):
    frame = visits(WEEK, imputed=False).assign(small=np.array([1, 2, 3], dtype="int32"))
    duck_load(tmp_path, duck_asset({WEEK: frame}, dagster_type=None), WEEK)
    assert duck_types(tmp_path) == {
        **DUCKDB_DECLARED,
        "small": "INTEGER",
    }  # int32 stays as DuckDB reads it


def test_duckdb_a_value_of_another_type_still_stops_the_load(tmp_path):
    frames = {
        WEEK: visits(WEEK),
        NEXT_WEEK: visits(NEXT_WEEK).assign(value=lambda f: f["value"].astype(str)),
    }
    asset = duck_asset(frames, dagster_type=None)
    duck_load(tmp_path, asset, WEEK)
    result = duck_load(tmp_path, asset, NEXT_WEEK, raise_on_error=False)
    assert not result.success
    assert "value: warehouse DOUBLE != incoming VARCHAR" in failure_text(result)


# --------------------------------------------------------------------------------------------------
# the mapping itself


@pytest.mark.parametrize("column", list(DUCKDB_DECLARED))
def test_the_declared_mapping_gives_what_a_frame_with_values_gives(column):
    """Tables created before keep matching: each declared dtype maps to the type the old code
    inferred from a frame with values (DuckDB from its Arrow copy, BigQuery from its dtypes)."""
    from customer_assets.io_managers.bigquery_types import frame_types
    from customer_assets.io_managers.declared import declared_types

    frame = visits(WEEK)[[column]]
    with duckdb.connect() as con:
        con.register(
            "incoming", to_arrow(frame, pa_arrow.Schema.from_pandas(frame, preserve_index=False))
        )
        inferred = con.execute("DESCRIBE incoming").fetchall()[0][1]
    declared = declared_types(dg.build_output_context(dagster_type=VisitsType), frame)[column]
    assert (declared.duckdb, declared.bigquery) == (inferred, frame_types(frame)[column])
    assert (declared.duckdb, declared.bigquery) == (
        DUCKDB_DECLARED[column],
        BIGQUERY_DECLARED[column],
    )


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["a", None], dtype="str"),
        pd.Series(["a", None], dtype="string"),
        pd.Series([1, None], dtype="Int64"),
        pd.Series([1, 2], dtype="int32"),
        pd.Series([1.5, None], dtype="float32"),
        pd.Series([True, None], dtype="boolean"),
    ],
    ids=lambda values: str(values.dtype),
)
def test_other_dtypes_map_to_what_a_frame_with_values_gives(values):
    """The text dtype the pipeline runs with (``str``, Arrow-backed: settings.configure_runtime) and
    the nullable and narrower dtypes a frame without a model may hold."""
    from customer_assets.io_managers.bigquery_types import bigquery_type
    from customer_assets.io_managers.declared import duckdb_type

    frame = values.to_frame("column")
    with duckdb.connect() as con:
        con.register(
            "incoming", to_arrow(frame, pa_arrow.Schema.from_pandas(frame, preserve_index=False))
        )
        inferred = con.execute("DESCRIBE incoming").fetchall()[0][1]
    assert duckdb_type(values.dtype) == inferred
    assert bigquery_type(values.dtype) in ("STRING", "INT64", "FLOAT64", "BOOL")


def test_every_model_of_the_pipeline_maps_to_warehouse_types():
    from customer_assets.io_managers.declared import declared_types

    for name in dir(frame_types_module):
        dagster_type = getattr(frame_types_module, name)
        if isinstance(dagster_type, dg.DagsterType) and "schema" in (dagster_type.metadata or {}):
            declared = declared_types(
                dg.build_output_context(dagster_type=dagster_type), pd.DataFrame()
            )
            assert declared and all(c.duckdb and c.bigquery for c in declared.values()), name


# --------------------------------------------------------------------------------------------------
# BigQuery (the emulator)


def bigquery_asset(frames: dict[str, pd.DataFrame], name: str = "weekly_visits"):
    @dg.asset(
        name=name,
        key_prefix=["customer_analytics"],
        partitions_def=weekly_partitions,
        io_manager_key="warehouse_io_manager",
        dagster_type=VisitsType,
        metadata={"partition_expr": "timestamp"},
    )
    def _asset(context):
        return frames[context.partition_key]

    return _asset


def bigquery_types(bigquery_client, dataset: str, table: str = "weekly_visits") -> dict[str, str]:
    sql = (
        f"SELECT column_name, data_type FROM `{PROJECT}.{dataset}.INFORMATION_SCHEMA.COLUMNS` "
        f"WHERE table_name = '{table}' ORDER BY ordinal_position"
    )
    try:
        return {r[0]: r[1] for r in bigquery_client.query(sql).result()}
    except Exception:
        from customer_assets.io_managers.bigquery_types import standard_type

        table_ref = bigquery_client.get_table(f"{PROJECT}.{dataset}.{table}")
        return {f.name: standard_type(f.field_type) for f in table_ref.schema}


def bigquery_count(bigquery_client, dataset: str, table: str = "weekly_visits") -> int:
    return next(
        iter(bigquery_client.query(f"SELECT COUNT(*) FROM `{PROJECT}.{dataset}.{table}`").result())
    )[0]


def test_bigquery_an_empty_first_week_creates_the_declared_types_and_the_next_week_loads(
    bigquery_client, manager, dataset
):
    # The partition column keeps its dtype (BigQuery needs it a timestamp); every other column is
    # object.
    first = empty_object_week().astype({"timestamp": "datetime64[ns, UTC]"})
    asset = bigquery_asset({WEEK_A: first, WEEK_B: visits(WEEK_B)})
    run([asset], WEEK_A, manager())
    assert bigquery_types(bigquery_client, dataset) == BIGQUERY_DECLARED
    run([asset], WEEK_B, manager())
    assert bigquery_count(bigquery_client, dataset) == 3


def test_bigquery_a_column_with_no_value_is_string(bigquery_client, manager, dataset):
    """Already so before: an object column is STRING whatever it holds
    (bigquery_types.bigquery_type)."""
    asset = bigquery_asset({WEEK_A: visits(WEEK_A, imputed=False), WEEK_B: visits(WEEK_B)})
    run([asset], WEEK_A, manager())
    assert bigquery_types(bigquery_client, dataset)["imputed_fields"] == "STRING"
    run([asset], WEEK_B, manager())
    assert bigquery_count(bigquery_client, dataset) == 6


def test_bigquery_a_float_column_with_no_value_loads_into_its_declared_string(
    bigquery_client, manager, dataset
):
    """A column of NaN (float64) declared str: cast to STRING rather than creating a FLOAT64
    column."""
    first = visits(WEEK_A).assign(imputed_fields=np.nan)
    asset = bigquery_asset({WEEK_A: first, WEEK_B: visits(WEEK_B)})
    run([asset], WEEK_A, manager())
    assert bigquery_types(bigquery_client, dataset)["imputed_fields"] == "STRING"
    run([asset], WEEK_B, manager())
    assert bigquery_count(bigquery_client, dataset) == 6
