"""Moving the suppression list to a new PII_HASH_KEY (the job ``rekey_suppression``).

No id is stored, so the ids to re-hash are the ones the sources hold (an unkeyed digest of an id
would be the id to anyone who reads the table: customer ids are short and enumerable): each entry
is matched by hashing every source id under the old key, and stored again under the new one.
Apart from ``suppression.py`` (the list as every run reads it) because only this job needs it.
"""

from __future__ import annotations

import pandas as pd

from customer_assets.logic.identity import keyed_hash
from customer_assets.resources.warehouse_sql import WarehouseSQL
from customer_assets.suppression import (
    SuppressionKeyError,
    add_hashes,
    canonical_ids,
    customer_hashes,
    ensure_table,
    fingerprint,
    list_entries,
)


def _refuse_a_third_key(entries: pd.DataFrame, fingerprints: pd.Series, old: str, new: str):
    foreign = entries.loc[~fingerprints.isin(["", old, new])]
    if not foreign.empty:
        raise SuppressionKeyError(
            f"{len(foreign)} entries of the suppression list are under a third key (fingerprint "
            f"{', '.join(sorted({f[:12] for f in foreign['key_fingerprint']}))}), neither the old key "
            f"({old[:12]}) nor the new one ({new[:12]}): give the key they were hashed under as the old key."
        )


def _by_hash(hashes: list[str], ids: list[str]) -> dict[str, list[str]]:
    by_hash: dict[str, list[str]] = {}
    for hashed, exact in zip(hashes, ids, strict=False):
        by_hash.setdefault(hashed, []).append(exact)
    return by_hash


def _source_ids_of(moving: pd.DataFrame, source_ids: list[str], old_key: str) -> dict:
    """Each moving entry's hash -> the source ids it stands for (none if no source id matches)."""
    candidates = pd.Series(canonical_ids(source_ids), dtype="str")
    by_old_hash = _by_hash(keyed_hash(candidates, old_key).tolist(), candidates.tolist())
    # An entry hashed upper-cased (older code) stands for every source id that upper-cases to its
    # id.
    legacy_form = moving["id_form"].fillna("") != "trimmed"
    by_legacy_hash = _by_hash(
        keyed_hash(candidates.str.upper(), old_key).tolist(), candidates.tolist()
    )
    return {
        h: (by_legacy_hash if legacy else by_old_hash).get(h, [])
        for h, legacy in zip(moving["customer_hash"], legacy_form, strict=False)
    }


def _store_under_new_key(
    warehouse: WarehouseSQL, matched: pd.DataFrame, ids_of: dict, new_key: str
) -> str:
    """Add the matched entries again, hashed under ``new_key``; returns the list's table."""
    table = ensure_table(warehouse)
    for (erased_at, request), group in matched.groupby(["erased_at", "request"], dropna=False):
        ids = [exact for h in group["customer_hash"] for exact in ids_of[h]]
        add_hashes(
            warehouse,
            customer_hashes(ids, new_key),
            request=request if isinstance(request, str) else "",
            key_fingerprint=fingerprint(new_key),
            erased_at=pd.Timestamp(erased_at).to_pydatetime(),
        )
    return table


def rekey(
    warehouse: WarehouseSQL,
    old_key: str,
    new_key: str,
    source_ids: list[str],
    drop_unmatched: bool = False,
) -> dict:
    """Move the entries hashed under ``old_key`` (and those of older code, without a fingerprint) to
    ``new_key``, re-deriving each from ``source_ids`` (every customer id the sources hold). Entries
    no source id matches cannot be moved: without ``drop_unmatched`` nothing changes and
    ``SuppressionKeyError`` names their requests (erase them again under the new key); with it they
    are dropped. Safe to repeat."""
    old, new = fingerprint(old_key), fingerprint(new_key)
    entries = list_entries(warehouse)
    fingerprints = entries["key_fingerprint"].fillna("")
    _refuse_a_third_key(entries, fingerprints, old, new)
    legacy = fingerprints.eq("")  # entries of older code: their key was not recorded
    moving = entries.loc[legacy | (fingerprints.eq(old) & (old != new))]
    ids_of = _source_ids_of(moving, source_ids, old_key)
    found = moving["customer_hash"].map(lambda h: bool(ids_of.get(h)))
    matched = moving.loc[found.to_numpy()]
    unmatched = moving.loc[~found.to_numpy()]
    requests = sorted({str(r) for r in unmatched["request"].tolist() if isinstance(r, str) and r})
    if len(unmatched) and not drop_unmatched:
        raise SuppressionKeyError(
            f"{len(unmatched)} of the {len(moving)} entries to move match no customer id the sources hold, so "
            f"they cannot be re-hashed (requests: {', '.join(requests) or 'none recorded'}). Nothing was changed. "
            "Run again with drop_unmatched: true, then erase those requests' ids again under the new key."
        )
    table = _store_under_new_key(warehouse, matched, ids_of, new_key)
    if len(moving):  # only after the new entries are in: a run in between stops on the mixed list
        warehouse.execute(
            "DELETE FROM {table} WHERE key_fingerprint IS NULL OR key_fingerprint = @old",
            {"old": old if old != new else ""},
            table=table,
        )
    return {
        "moved": len(matched),
        "dropped": len(unmatched),
        "dropped_requests": requests,
        "already_under_new_key": int((fingerprints == new).sum()) if old != new else 0,
        "old_fingerprint": old[:12],
        "new_fingerprint": new[:12],
    }
