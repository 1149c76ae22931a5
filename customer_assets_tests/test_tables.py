"""Every warehouse table named once (``tables.py``), erasable if it holds customer ids, kept fresh.

The cases come from the definitions: a new warehouse asset is checked without a new test.
"""

from __future__ import annotations

import dagster as dg
import pytest

from customer_assets import tables
from customer_assets.definitions import defs
from customer_assets.freshness import WEEKLY_FRESHNESS
from customer_assets.lineage import LINEAGE
from customer_assets.suppression import customer_tables

SPECS = {
    spec.key.path[1]: spec for spec in defs.resolve_all_asset_specs() if tables.is_table(spec.key)
}
# The columns that hold a customer's id or a person's (the identity's persons, the merges' retired
# and surviving persons).
ID_COLUMNS = {"customer_id", "source_customer_id", "retired_id", "surviving_id"}
# Warehouse tables that declare no columns and hold no customer id (one that holds ids is tagged).
NO_CUSTOMER_IDS = {tables.DIM_PRODUCTS: "the product catalogue's versions"}


def declared_columns(table: str) -> set[str] | None:
    """The columns the table's asset declares: its column schema, else its Dagster type's."""
    spec = SPECS[table]
    schema = spec.metadata.get("dagster/column_schema")
    if schema is None:
        assets_def = defs.resolve_assets_def(spec.key)
        output_name = assets_def.get_output_name_for_asset_key(spec.key)
        metadata = assets_def.node_def.output_def_named(output_name).dagster_type.metadata
        values = [getattr(value, "value", value) for value in metadata.values()]
        schema = next((value for value in values if isinstance(value, dg.TableSchema)), None)
    return None if schema is None else {column.name for column in schema.columns}


def test_every_warehouse_table_is_named_in_tables_py():
    named = {value for name, value in vars(tables).items() if name.isupper() and name != "SCHEMA"}
    assert set(SPECS) == named - {tables.ERASURE_SUPPRESSION}


@pytest.mark.parametrize("table", sorted(SPECS))
def test_a_warehouse_table_holding_customer_ids_is_erasable(table):
    erased = customer_tables().get(table)
    columns = declared_columns(table)
    if columns is None:
        assert erased or table in NO_CUSTOMER_IDS, (
            f"{table} declares no columns: tag it holds_customer_ids() or list it in "
            "NO_CUSTOMER_IDS"
        )
        return
    held = columns & ID_COLUMNS
    assert held <= set(erased or ()), f"{table} holds {sorted(held)}: tag it holds_customer_ids()"
    assert set(erased or ()) <= columns, f"{table}'s tag names columns it does not declare"


@pytest.mark.parametrize("table", sorted(customer_tables()))
def test_the_step_writing_a_customer_table_rechecks_the_suppression_list(table):
    hooks = {hook.name for hook in defs.resolve_assets_def(tables.key(table)).hook_defs}
    rechecks = [name for name in hooks if name.startswith("recheck_suppression_after_")]
    assert any(table in name for name in rechecks), hooks


@pytest.mark.parametrize("table", sorted(SPECS))
def test_every_warehouse_table_has_the_weekly_freshness_policy(table):
    assert SPECS[table].freshness_policy == WEEKLY_FRESHNESS


def test_the_column_lineage_names_warehouse_tables():
    named = {
        source.split(".")[0]
        for columns in LINEAGE.values()
        for lineage in columns.values()
        for source in lineage.sources
    }
    assert named <= set(SPECS), named - set(SPECS)
