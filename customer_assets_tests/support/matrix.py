"""The graph-wide test matrix's view of the definitions: every executable asset step, and a stand-in
that fails.

Everything here is derived from the definitions (``pipeline_assets()``), so an asset added later is
part of the matrix without a new test.
"""

from __future__ import annotations

import dagster as dg

from customer_assets.cleanup.progress import IntermediateGraph
from customer_assets.definitions import pipeline_assets
from customer_assets.hooks import cleanup_hooks


class InjectedFailure(Exception):
    """The exception a stand-in step raises."""


def asset_steps(assets: list) -> dict[str, dg.AssetsDefinition]:
    """Each executable asset step (op name) of the definitions, with its assets definition."""
    return {
        a.op.name: a
        for a in assets
        if isinstance(a, dg.AssetsDefinition) and a.is_executable and a.keys
    }


def failing_stand_in(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """A step with the same name, assets, checks, inputs and partitions that loads its inputs and
    then raises."""
    data_inputs = {
        name: key
        for name, key in assets_def.keys_by_input_name.items()
        if not assets_def.op.ins[name].dagster_type.is_nothing
    }
    ins = {name: dg.AssetIn(key=key) for name, key in data_inputs.items()}
    specs = list(assets_def.specs)

    @dg.multi_asset(
        name=assets_def.op.name,
        specs=specs,
        ins=ins,
        check_specs=list(assets_def.check_specs),
        partitions_def=assets_def.partitions_def,
        can_subset=assets_def.can_subset,
    )
    def stand_in(**_inputs):
        raise InjectedFailure(f"injected failure of step {assets_def.op.name}")

    return stand_in


def assets_with_failing(step: str) -> list:
    """The pipeline's assets with ``step`` replaced by its failing stand-in, every step with its
    cleanup hooks."""
    assets = pipeline_assets()
    plain = [
        a
        for a in assets
        if not (isinstance(a, dg.AssetsDefinition) and a.is_executable and a.op.name == step)
    ]
    stand_in = failing_stand_in(asset_steps(assets)[step])
    hooks = cleanup_hooks(IntermediateGraph.of(assets))
    return plain + [stand_in.with_hooks(hooks)]


def downstream_of(assets: list, step: str) -> set[dg.AssetKey]:
    """The asset keys a failure of ``step`` can stop: its own and everything downstream of them."""
    own = asset_steps(assets)[step].keys
    return set(dg.AssetSelection.assets(*own).downstream().resolve(assets))
