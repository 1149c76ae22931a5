"""Erasure on request: a customer removed from every warehouse table and kept file, and kept out afterwards.

The job ``erase_customers`` takes a list of customer ids (from the launchpad in the UI, or
``dagster job execute -j erase_customers -c erasure.yaml`` from the CLI). It first adds their keyed hashes
(HMAC-SHA256 under PII_HASH_KEY, never the ids) to the warehouse table ``erasure_suppression``, then deletes
their rows from every week of every customer table, DuckDB and BigQuery alike, and from the week files under
the data and reports directories. It records what it removed: counts per table and file, no personal data.

Later weekly runs and backfills read the suppression list: the extract drops those customers' rows (counted in
its metadata as ``suppressed_rows``), and the profiles leave them out, so a backfill never brings them back.
"""


from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field

from customer_assets.cleanup import write_log
from customer_assets.logic.identity import keyed_hash, standardise_ids
from customer_assets.resources.crm import CrmSource
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.settings import PipelineSettings

SCHEMA = "customer_analytics"
SUPPRESSION = (SCHEMA, "erasure_suppression")
# Every warehouse table that holds a customer id (the data-quality metrics hold counts only).
CUSTOMER_TABLES = ("weekly_transactions", "customer_history", "weekly_customer_profiles", "dim_customers",
                   "fact_transactions", "fact_transactions_quarantine", "customer_identity_map")

CREATE_SUPPRESSION_SQL = """
CREATE TABLE IF NOT EXISTS {table} (customer_hash {STR}, erased_at {DATETIME}, request {STR})
"""
ADD_SUPPRESSION_SQL = """
INSERT INTO {table} (customer_hash, erased_at, request)
SELECT h, @erased_at, @request FROM {hashes} WHERE h NOT IN (SELECT customer_hash FROM {table})
"""
# Ids compared as the profiles join them (trimmed, upper-cased): 'c-1', ' C-1' and 'C-1' are one customer.
_ERASED = "upper(trim(customer_id)) IN (SELECT i FROM {ids})"
# The identity map also holds the erased ids as the source ids of customers resolved to another id.
MAP_ERASED = _ERASED + " OR upper(trim(source_customer_id)) IN (SELECT i FROM {ids})"
MAP_TABLE = "customer_identity_map"


def canonical_ids(ids) -> list[str]:
    """Customer ids in the one form every source is matched in (``standardise_ids``: trimmed, upper-cased)."""
    values = pd.Series([str(i) for i in ids if i is not None], dtype="str")
    return sorted(set(standardise_ids(values).dropna().tolist()))


def customer_hashes(ids, hash_key: str) -> list[str]:
    """The suppression list's form of customer ids: canonical, then keyed-hashed."""
    return sorted(set(keyed_hash(pd.Series(canonical_ids(ids), dtype="str"), hash_key).tolist()))


def suppressed_hashes(warehouse: WarehouseSQL) -> frozenset[str]:
    """The keyed hashes of every erased customer (empty before the first erasure)."""
    if not warehouse.exists(*SUPPRESSION):
        return frozenset()
    rows = warehouse.query("SELECT DISTINCT customer_hash FROM {table}", table=warehouse.table(*SUPPRESSION))
    return frozenset(rows["customer_hash"].tolist())


def suppressed_mask(customer_ids: pd.Series, hashes: frozenset[str], hash_key: str) -> pd.Series:
    """True where a row's customer was erased. Costs nothing while the list is empty; otherwise one keyed hash
    per distinct customer of the frame, not per row."""
    if not hashes or customer_ids.empty:
        return pd.Series(False, index=customer_ids.index)
    distinct = pd.Series(customer_ids.dropna().unique(), dtype="str")
    canonical = standardise_ids(distinct)
    hashed = keyed_hash(canonical, hash_key)
    erased = set(distinct[hashed.isin(hashes).to_numpy()])
    return customer_ids.isin(erased)


def drop_suppressed(frame: pd.DataFrame, warehouse: WarehouseSQL, hash_key: str) -> tuple[pd.DataFrame, int]:
    """``frame`` without the rows of erased customers (its ``customer_id`` on the suppression list), and how many
    rows that left out."""
    erased = suppressed_mask(frame["customer_id"], suppressed_hashes(warehouse), hash_key)
    count = int(erased.sum())
    return (frame.loc[~erased.to_numpy()].reset_index(drop=True) if count else frame), count


def erase_from_warehouse(warehouse: WarehouseSQL, ids: list[str], hash_key: str, request: str) -> dict[str, int]:
    """Add the ids' hashes to the suppression list, then delete their rows from every customer table; returns
    rows removed per table. Safe to repeat: a second run removes nothing and adds no hash twice."""
    ids = canonical_ids(ids)
    warehouse.ensure_schema(SCHEMA)
    table = warehouse.table(*SUPPRESSION)
    warehouse.execute(CREATE_SUPPRESSION_SQL, table=table)
    warehouse.execute(ADD_SUPPRESSION_SQL, {"hashes": customer_hashes(ids, hash_key), "request": request,
                                            "erased_at": datetime.now(timezone.utc).replace(tzinfo=None)},
                      table=table, hashes=warehouse.unnest("hashes", "h"))
    removed = {}
    for name in CUSTOMER_TABLES:
        if not warehouse.exists(SCHEMA, name):
            continue
        names = {"table": warehouse.table(SCHEMA, name), "ids": warehouse.unnest("ids", "i")}
        where = MAP_ERASED if name == MAP_TABLE else _ERASED
        removed[name] = int(warehouse.query("SELECT count(*) AS n FROM {table} WHERE " + where, {"ids": ids},
                                            **names)["n"].iloc[0])
        if removed[name]:
            warehouse.execute("DELETE FROM {table} WHERE " + where, {"ids": ids}, **names)
    return removed


def erase_from_files(roots: list[Path], ids: list[str]) -> dict[str, int]:
    """Rewrite every Parquet and CSV file under ``roots`` that has a ``customer_id`` column without those
    customers' rows (week intermediates left by a failed run, anomaly listings); returns rows removed per file."""
    wanted = set(canonical_ids(ids))
    removed = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else []:
            if path.suffix == ".parquet":
                if "customer_id" not in pq.read_schema(path).names:
                    continue
                frame = pd.read_parquet(path)
            elif path.suffix == ".csv":
                frame = pd.read_csv(path, dtype={"customer_id": str})
                if "customer_id" not in frame:
                    continue
            else:
                continue
            hit = standardise_ids(frame["customer_id"]).isin(wanted).fillna(False).astype(bool)
            if hit.any():
                kept = frame.loc[~hit]
                tmp = path.with_name(path.name + ".tmp")
                if path.suffix == ".parquet":
                    kept.to_parquet(tmp, index=False)
                else:
                    kept.to_csv(tmp, index=False)
                tmp.replace(path)
                removed[str(path)] = int(hit.sum())
    return removed


class ErasureConfig(dg.Config):
    customer_ids: list[str] = Field(description="Source customer ids to forget (as the transaction database holds them).")
    request: str = Field(default="", description="The erasure request's reference (a ticket id), kept with the hashes.")


@dg.op(description="Forget customers: keyed hashes on the suppression list, rows deleted from every warehouse "
       "table and kept file, counts recorded.", out=dg.Out(dg.Nothing))
def erase_customers_op(context: dg.OpExecutionContext, config: ErasureConfig, warehouse: WarehouseSQL,
                       crm: CrmSource, settings: PipelineSettings):
    if not config.customer_ids:
        raise dg.Failure(description="erase_customers needs at least one id in config customer_ids", allow_retries=False)
    tables = erase_from_warehouse(warehouse, config.customer_ids, crm.hash_key, config.request)
    files = erase_from_files([Path(settings.data_dir) / "etl", Path(settings.reports_dir)], config.customer_ids)
    record = {"erased_at": datetime.now(timezone.utc).isoformat(), "request": config.request,
              "customers": len(set(config.customer_ids)), "rows_removed_per_table": tables,
              "rows_removed_per_file": files}
    path = write_log(settings, "erasure", record)  # counts and paths only: the ids are not written there
    context.log.info(f"erased {record['customers']} customer(s): {sum(tables.values())} warehouse rows, "
                     f"{sum(files.values())} file rows")
    return dg.Output(None, metadata={"customers": record["customers"],
                                       "rows_removed": sum(tables.values()) + sum(files.values()),
                                       "per_table": dg.MetadataValue.json(tables),
                                       "files": dg.MetadataValue.json(files),
                                       "record": dg.MetadataValue.path(str(path.resolve()))})


@dg.job(description="Forget customers on request (GDPR art. 17): give `customer_ids` in the launchpad config. "
        "Removes them from every week of every warehouse table and kept file, and keeps their keyed hashes on "
        "the suppression list so later weeks and backfills leave them out.",
        tags={"dagster/max_retries": 0})
def erase_customers():
    erase_customers_op()
