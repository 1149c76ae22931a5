"""The re-check after each write: every step that writes a customer table (tagged by
``holds_customer_ids``) reads the suppression list again once it has written, and removes the
listed customers from what it wrote (``scrub``), so a run that started before an erasure cannot
undo it. Apart from ``suppression.py`` (the list itself) because it is wiring of the steps: hooks
added to the assets by ``with_suppression_recheck``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets.cleanup.runs import run_week
from customer_assets.duck import step_connections
from customer_assets.hooks import step_end_hook
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.suppression import (
    MAP_TABLE,
    SCHEMA,
    canonical_ids,
    customer_tables_of,
    delete_customers,
    id_columns,
    rewrite_files,
    suppressed_hashes,
    suppressed_mask,
)


def scrub(warehouse: WarehouseSQL, hash_key: str, tables, files: list[Path]) -> dict[str, int]:
    """Remove listed customers from ``tables`` and ``files`` again (after a step wrote them): the
    list is read after the write, so an erasure that ran before the write is in it, and one that
    runs after deletes the rows itself. Nothing to do, and one small query, while the list is
    empty."""
    hashes = suppressed_hashes(warehouse, hash_key)
    if not hashes:
        return {}
    removed = {}
    for name in tables:
        if not warehouse.exists(SCHEMA, name):
            continue
        columns = ", ".join(id_columns(name))
        if name == MAP_TABLE:  # the ERP's records by their namespaced ids
            columns = (
                "customer_id, CASE WHEN source = 'erp' THEN 'erp:' ELSE '' END || source_customer_id "
                "AS source_customer_id"
            )
        present = warehouse.query(
            f"SELECT DISTINCT {columns} FROM {{table}}", table=warehouse.table(SCHEMA, name)
        )
        ids = pd.Series(pd.unique(present.to_numpy().ravel()), dtype="str").dropna()
        erased = canonical_ids(ids[suppressed_mask(ids, hashes, hash_key).to_numpy()].tolist())
        if erased:
            removed.update(delete_customers(warehouse, erased, [name]))
    removed.update(rewrite_files(files, lambda ids: suppressed_mask(ids, hashes, hash_key)))
    return {k: v for k, v in removed.items() if v}


def _resource(context: dg.HookContext, key: str):
    """A hook's resource as a step gets it: ``context.resources`` holds what a resource's setup
    yields (for dagster-gcp's BigQueryResource, a bare client), its ``original_resource_dict`` the
    resource object."""
    return (getattr(context.resources, "original_resource_dict", None) or {}).get(key) or getattr(
        context.resources, key
    )


def _recheck_hook(tables: tuple[str, ...]) -> dg.HookDefinition:
    """The hook that scrubs ``tables`` (and the week's report files) once their step has written,
    whether the step then succeeded or not (a failed check does not undo its asset's write)."""

    @step_end_hook(
        f"recheck_suppression_after_{'__'.join(tables)}", {"warehouse", "pii", "settings"}
    )
    def recheck(context: dg.HookContext, succeeded: bool) -> None:
        run = context.instance.get_run_by_id(context.run_id)
        week = run_week(run)
        settings = _resource(context, "settings")
        files = [Path(settings.reports_dir, week)] if week else []
        with step_connections():  # the list's few queries on one opening of the file
            removed = scrub(
                _resource(context, "warehouse"), _resource(context, "pii").hash_key, tables, files
            )
        if removed:
            context.log.info(
                f"{sum(removed.values())} row(s) of customers erased while the run ran removed "
                f"again: {removed}"
            )

    return recheck


def with_suppression_recheck(assets: list) -> list:
    """Every step that writes a customer table (tagged by ``holds_customer_ids``) re-reads the
    suppression list after its write (``scrub``)."""
    out = []
    for asset in assets:
        written = tuple(sorted(customer_tables_of(getattr(asset, "specs", ()))))
        if written and isinstance(asset, dg.AssetsDefinition) and asset.is_executable:
            asset = asset.with_hooks({_recheck_hook(written)})
        out.append(asset)
    return out
