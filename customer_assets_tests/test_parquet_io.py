"""The local Parquet IO manager: atomic files per asset and week, and inputs that read only some columns."""

import dagster as dg
import pandas as pd

from customer_assets.io_managers.parquet import LocalParquetIOManager

KEY = dg.AssetKey(["etl", "frame"])


def test_round_trip_keeps_values_and_text_dtype(tmp_path):
    manager = LocalParquetIOManager(base_dir=str(tmp_path))
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None], "c": [0.5, 1.5]})
    manager.handle_output(dg.build_output_context(asset_key=KEY), frame)
    assert [p.name for p in (tmp_path / "etl" / "frame").iterdir()] == ["all.parquet"]  # no temporary left
    back = manager.load_input(dg.build_input_context(asset_key=KEY))
    pd.testing.assert_frame_equal(back, frame)
    assert back["b"].dtype == "str" and pd.isna(back.loc[1, "b"])


def test_an_input_can_ask_for_some_columns_only(tmp_path):
    manager = LocalParquetIOManager(base_dir=str(tmp_path))
    manager.handle_output(dg.build_output_context(asset_key=KEY), pd.DataFrame({"a": [1], "b": ["x"], "c": [2.0]}))
    back = manager.load_input(dg.build_input_context(asset_key=KEY, definition_metadata={"columns": ["c", "a"]}))
    assert back.columns.tolist() == ["c", "a"] and back.loc[0, "c"] == 2.0
