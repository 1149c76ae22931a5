"""The erasure suppression list: who was forgotten, as keyed hashes, and under which key.

Each entry is HMAC-SHA256(PII_HASH_KEY, canonical id) with the key's fingerprint (an HMAC of a fixed
label under the key, never the key). A list read under another key matches nobody, so every reader
checks the fingerprints first (``check_key``): a changed or lost key stops the run instead of
bringing erased customers back. ``rekey`` (``suppression_rekey.py``) moves the list to a new key by
re-deriving it from the sources: no id is stored, so the ids to re-hash are the ones the sources
hold (an unkeyed digest of an id would be the id to anyone who reads the table: customer ids are
short and enumerable). ``scrub`` (``suppression_recheck.py``) removes listed customers from tables a
step has just written, so a run that started before an erasure cannot undo it. Here: the list, the
customer tables and the deletion of customers' rows from tables and files.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from customer_assets import tables
from customer_assets.logic.identity import is_in, keyed_hash, standardise_ids
from customer_assets.resources.warehouse_sql import WarehouseSQL

SCHEMA = tables.SCHEMA
SUPPRESSION = (SCHEMA, tables.ERASURE_SUPPRESSION)
MAP_TABLE = tables.CUSTOMER_IDENTITY_MAP
# The tag of every warehouse table that holds customer ids; its value names the columns holding
# them.
PII_TAG = "pii"

_FINGERPRINT_LABEL = b"customer_assets erasure_suppression key fingerprint v1"

CREATE_SUPPRESSION_SQL = """
CREATE TABLE IF NOT EXISTS {table} (customer_hash {STR}, erased_at {DATETIME}, request {STR}, key_fingerprint {STR},
  id_form {STR})
"""
ADD_SUPPRESSION_SQL = """
INSERT INTO {table} (customer_hash, erased_at, request, key_fingerprint, id_form)
SELECT h, @erased_at, @request, @fingerprint, 'trimmed' FROM {hashes} WHERE h NOT IN (SELECT customer_hash FROM {table})
"""
# Entries written before ids kept their case (issue 21) hashed the id upper-cased: they still match
# every id that upper-cases to theirs, as they did when they were erased.
LEGACY_FORM = "upper"


def holds_customer_ids(*columns: str) -> dict[str, str]:
    """The tags of a warehouse table whose ``columns`` (``customer_id`` unless named) hold customer
    or person ids: erasure deletes a forgotten customer's rows from it, and each step that writes it
    re-reads the suppression list after its write. Set in the asset's decorator, so that a new table
    cannot be missed."""
    return {PII_TAG: ".".join(columns or ("customer_id",))}


def customer_tables_of(specs) -> dict[str, tuple[str, ...]]:
    """Each warehouse table among ``specs`` tagged ``PII_TAG``, with the columns holding its ids."""
    return {
        spec.key.path[1]: tuple(spec.tags[PII_TAG].split("."))
        for spec in specs
        if tables.is_table(spec.key) and PII_TAG in spec.tags
    }


@cache
def customer_tables() -> dict[str, tuple[str, ...]]:
    """Every warehouse table that holds a customer id, with its id columns, as the assets declare
    them (``holds_customer_ids``). Read from the asset modules when first asked: they import this
    module."""
    import customer_assets.assets

    assets = dg.load_assets_from_package_module(customer_assets.assets)
    return customer_tables_of(spec for asset in assets for spec in getattr(asset, "specs", [asset]))


def id_columns(table: str) -> tuple[str, ...]:
    return customer_tables().get(table, ("customer_id",))


# Ids compared trimmed, case kept: 'C-1' and ' C-1' are one customer, 'c-1' another (issue 21).
def _erased(table: str) -> str:
    """The rows of ``table`` that hold one of the ids (``{ids}``) in any of its id columns (an ERP
    record of the identity by its namespaced id, erp:<id>)."""
    if table == MAP_TABLE:
        return (
            "trim(customer_id) IN (SELECT i FROM {ids}) OR (CASE WHEN source = 'erp' THEN 'erp:' ELSE '' END "
            "|| trim(source_customer_id)) IN (SELECT i FROM {ids})"
        )
    return " OR ".join(f"trim({c}) IN (SELECT i FROM {{ids}})" for c in id_columns(table))


# Every record of the persons the given ids belong to, in any week of the identity. An id names a
# person, or a record of the shop or the CRM (which share ids); the ERP's ids are of their own
# namespace (erp:<id>).
PERSON_IDS_SQL = """
SELECT DISTINCT customer_id, source, source_customer_id FROM {table}
WHERE customer_id IN (SELECT customer_id FROM {table}
                      WHERE (source <> 'erp' AND trim(source_customer_id) IN (SELECT i FROM {ids}))
                         OR trim(customer_id) IN (SELECT i FROM {ids}))
"""


def fingerprint(key: str) -> str:
    """What identifies a key without revealing it: HMAC-SHA256 of a fixed label under the key."""
    if not key:
        raise ValueError("a non-empty hashing key is required (PII_HASH_KEY)")
    return hmac.new(key.encode(), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def canonical_ids(ids) -> list[str]:
    """Customer ids in the one form every source is matched in (``standardise_ids``: trimmed, case
    kept)."""
    values = pd.Series([str(i) for i in ids if i is not None], dtype="str")
    return sorted(set(standardise_ids(values).dropna().tolist()))


def customer_hashes(ids, hash_key: str) -> list[str]:
    """The suppression list's form of customer ids: canonical, then keyed-hashed."""
    return sorted(set(keyed_hash(pd.Series(canonical_ids(ids), dtype="str"), hash_key).tolist()))


def ensure_table(warehouse: WarehouseSQL) -> str:
    """The list's table, created (or given its fingerprint column, left empty by older code) when
    needed."""
    warehouse.ensure_schema(SCHEMA)
    table = warehouse.table(*SUPPRESSION)
    warehouse.execute(CREATE_SUPPRESSION_SQL, table=table)
    columns = warehouse.query("SELECT * FROM {table} LIMIT 0", table=table).columns
    for column in ("key_fingerprint", "id_form"):
        if column not in columns:
            warehouse.execute(f"ALTER TABLE {{table}} ADD COLUMN {column} {{STR}}", table=table)
    return table


def list_entries(warehouse: WarehouseSQL) -> pd.DataFrame:
    """Every entry (hash, request, fingerprint, erased_at); empty before the first erasure."""
    if not warehouse.exists(*SUPPRESSION):
        return pd.DataFrame(
            columns=["customer_hash", "erased_at", "request", "key_fingerprint", "id_form"]
        )
    entries = warehouse.query("SELECT * FROM {table}", table=warehouse.table(*SUPPRESSION))
    for column in ("key_fingerprint", "id_form"):
        if column not in entries.columns:
            entries[column] = None
    return entries


class SuppressedHashes(frozenset):
    """The list's keyed hashes; ``legacy`` those of entries hashed upper-cased (``LEGACY_FORM``)."""

    legacy: frozenset = frozenset()


def _hashes(entries: pd.DataFrame) -> SuppressedHashes:
    hashes = SuppressedHashes(entries["customer_hash"].tolist())
    hashes.legacy = frozenset(
        entries.loc[entries["id_form"].fillna("") != "trimmed", "customer_hash"].tolist()
    )
    return hashes


class SuppressionKeyError(dg.Failure):
    """The list was hashed under another key than this run's: reading it would match nobody."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


def check_key(warehouse: WarehouseSQL, hash_key: str, where: str = "PII_HASH_KEY") -> None:
    """Raise ``SuppressionKeyError`` (one line: what happened, what to do, ``where`` the key is
    kept: ``PiiKey.where``) unless every entry of the list was hashed under ``hash_key``. Costs one
    small query."""
    entries = list_entries(warehouse)
    if entries.empty:
        return
    current = fingerprint(hash_key)
    others = entries.loc[entries["key_fingerprint"].fillna("") != current]
    if others.empty:
        return
    was = sorted(
        {f[:12] if isinstance(f, str) and f else "none recorded" for f in others["key_fingerprint"]}
    )
    raise SuppressionKeyError(
        f"The erasure suppression list holds {len(others)} erased customer(s) hashed under another key "
        f"(fingerprint {', '.join(was)}) than this run's ({current[:12]}), so they would come back: nothing was "
        f"read. Restore the key they were hashed under ({where}), or move the list to "
        "this key with the job rekey_suppression (README: Rotating PII_HASH_KEY)."
    )


def suppressed_hashes(warehouse: WarehouseSQL, hash_key: str) -> SuppressedHashes:
    """The keyed hashes of every erased customer (empty before the first erasure); the key checked
    first."""
    check_key(warehouse, hash_key)
    return _hashes(list_entries(warehouse))


def suppressed_mask(customer_ids: pd.Series, hashes: frozenset[str], hash_key: str) -> pd.Series:
    """True where a row's customer was erased. Costs nothing while the list is empty; otherwise one
    keyed hash per distinct customer of the frame, not per row."""
    if not hashes or customer_ids.empty:
        return pd.Series(False, index=customer_ids.index)
    distinct = pd.Series(customer_ids.dropna().unique(), dtype="str")
    canonical = standardise_ids(distinct)
    hit = is_in(keyed_hash(canonical, hash_key), hashes)
    legacy = getattr(hashes, "legacy", frozenset())
    if legacy:
        hit = hit | is_in(keyed_hash(canonical.str.upper(), hash_key), legacy)
    return pd.Series(is_in(customer_ids, distinct[hit]), index=customer_ids.index)


def drop_suppressed(
    frame: pd.DataFrame, warehouse: WarehouseSQL, hash_key: str
) -> tuple[pd.DataFrame, int]:
    """``frame`` without the rows of erased customers (its ``customer_id`` on the suppression list),
    and how many rows that left out."""
    erased = suppressed_mask(frame["customer_id"], suppressed_hashes(warehouse, hash_key), hash_key)
    count = int(erased.sum())
    return (frame.loc[~erased.to_numpy()].reset_index(drop=True) if count else frame), count


def drop_suppressed_rows(
    table: pa.Table, warehouse: WarehouseSQL, hash_key: str
) -> tuple[pa.Table, int]:
    """``drop_suppressed`` for an Arrow table: only its ``customer_id`` column is read into pandas
    (Arrow-backed text, no copy of the rest)."""
    ids = table.column("customer_id").to_pandas()
    erased = suppressed_mask(ids, suppressed_hashes(warehouse, hash_key), hash_key)
    count = int(erased.sum())
    return (table.filter(pa.array(~erased.to_numpy())) if count else table), count


def add_to_list(warehouse: WarehouseSQL, hashes: list[str], hash_key: str, request: str) -> None:
    """Add keyed hashes to the list under ``hash_key``'s fingerprint (a hash already listed is not
    added twice)."""
    add_hashes(
        warehouse,
        hashes,
        request=request,
        key_fingerprint=fingerprint(hash_key),
        erased_at=datetime.now(timezone.utc).replace(tzinfo=None),
    )


def add_hashes(
    warehouse: WarehouseSQL, hashes, request: str, key_fingerprint: str, erased_at: datetime
) -> str:
    """Add ``hashes`` to the list as entries of ``request`` (none listed twice), in the parts a
    list parameter of the warehouse holds; returns the list's table."""
    table = ensure_table(warehouse)
    for part in warehouse.in_parts(hashes):
        warehouse.execute(
            ADD_SUPPRESSION_SQL,
            {
                "hashes": part,
                "request": request,
                "fingerprint": key_fingerprint,
                "erased_at": erased_at,
            },
            table=table,
            hashes=warehouse.unnest("hashes", "h"),
        )
    return table


def with_their_persons(warehouse: WarehouseSQL, ids: list[str]) -> list[str]:
    """``ids`` and every other id of the persons they belong to (``customer_identity_map``): erasing
    one of a person's ids erases the person, under whatever id the CRM, the ERP or the shop knows
    them."""
    if not ids or not warehouse.exists(SCHEMA, MAP_TABLE):
        return list(ids)
    names = {"table": warehouse.table(SCHEMA, MAP_TABLE), "ids": warehouse.unnest("ids", "i")}
    rows = pd.concat(
        [
            warehouse.query(PERSON_IDS_SQL, {"ids": part}, **names)
            for part in warehouse.in_parts(list(ids))
        ],
        ignore_index=True,
    )
    records = rows["source_customer_id"].where(
        rows["source"] != "erp", "erp:" + rows["source_customer_id"]
    )
    return canonical_ids([*ids, *rows["customer_id"].tolist(), *records.tolist()])


def delete_customers(warehouse: WarehouseSQL, ids: list[str], table_names=None) -> dict[str, int]:
    """Delete the rows of canonical ``ids`` from ``table_names`` (those that exist; by default every
    customer table); rows removed per table."""
    removed = {}
    for name in customer_tables() if table_names is None else table_names:
        if not warehouse.exists(SCHEMA, name):
            continue
        if not ids:
            removed[name] = 0
            continue
        names = {"table": warehouse.table(SCHEMA, name), "ids": warehouse.unnest("ids", "i")}
        where = _erased(name)
        removed[name] = 0
        # part by part, counted before each delete: a row two parts name is counted once
        for part in warehouse.in_parts(ids):
            found = int(
                warehouse.query(
                    "SELECT count(*) AS n FROM {table} WHERE " + where, {"ids": part}, **names
                )["n"].iloc[0]
            )
            if found:
                warehouse.execute("DELETE FROM {table} WHERE " + where, {"ids": part}, **names)
            removed[name] += found
    return removed


def rewrite_files(roots: list[Path], is_erased) -> dict[str, int]:
    """Rewrite every Parquet and CSV file under ``roots`` that has a ``customer_id`` column without
    the rows ``is_erased`` (a Series of ids -> bool mask) marks; returns rows removed per file."""
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
            hit = (
                pd.Series(is_erased(frame["customer_id"]), index=frame.index)
                .fillna(False)
                .astype(bool)
            )
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
