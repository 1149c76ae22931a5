"""A person's id: each linked component's best record (``best_first``), the person that survives
when a week joins persons (``survivors``) and the merges that retire the others (``merges_of``),
the name of a new person (``person_ids``); and merges followed to their final survivor
(``final_survivors``, ``follow``), as dim_customers and the facts follow them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from customer_assets.logic.identity import is_in, newest_first, text_order
from customer_assets.logic.identity_links import merged_on
from customer_assets.logic.per_person import SOURCE_PRIORITY


def best_first(records: pd.DataFrame) -> pd.DataFrame:
    """The records by component, each component's best record first (the CRM before the ERP before
    the database, then the most recent, then by id); ties keep their order."""
    rank = records["source"].map(SOURCE_PRIORITY).fillna(len(SOURCE_PRIORITY)).to_numpy(np.int64)
    order = np.lexsort(  # the last key sorts first
        (
            text_order(records["source_customer_id"]),
            newest_first(records["updated_at"]),
            rank,
            records["component"].to_numpy(),
        )
    )
    return records.iloc[order]


def survivors(ranked: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Each component's surviving person (that of its best record with a person), and a record of
    each other person of the component: those merge into it and are retired (``ranked``: each
    component's best record first; ``person_link``, the record's person as an integer code, missing
    for a record new this week). Found over positions and integer codes, the text taken only for
    the rows returned: filtering and de-duplicating the records' text took seconds for a 10M-row
    week's millions of records."""
    has_person = np.flatnonzero(ranked["person_link"].notna().to_numpy())
    component = ranked["component"].to_numpy(dtype=np.int64)[has_person]
    person = ranked["person_link"].to_numpy(dtype=np.int64, na_value=-1)[has_person]
    first = ~pd.Series(component).duplicated().to_numpy()
    survivor = ranked["customer_id"].iloc[has_person[first]].astype("str")
    survivor.index = component[first]
    surviving = pd.Series(person[first], index=component[first])
    pairs = pd.Series(component * (int(person.max(initial=0)) + 1) + person)
    other = ~pairs.duplicated().to_numpy() & (person != surviving.reindex(component).to_numpy())
    return survivor, ranked.iloc[has_person[other]]


def person_ids(ranked: pd.DataFrame, survivor: pd.Series, used: pa.Array) -> tuple[pd.Series, int]:
    """Each component's person id (by component): its surviving person's, or for a component without
    one a new id named by its best record (a CRM record as the shop spells the id), none of
    ``used``. Also how many persons are new."""
    best = ranked.drop_duplicates("component")
    fresh = best[~best["component"].isin(survivor.index)]
    new_ids = _new_ids(fresh, _spelling(ranked, fresh), used).astype("str")
    new_ids.index = fresh["component"].to_numpy()
    return pd.concat([part for part in (survivor, new_ids) if len(part)]), len(fresh)


def _spelling(ranked: pd.DataFrame, fresh: pd.DataFrame) -> pd.Series:
    """The id each new person (``fresh``: the best record of a component without one) is named by:
    the id as a shop record of the component spells it, else the best record's own id."""
    # only the new persons' components: in a week after the first, few of them
    shop = ranked[
        (ranked["source"] == "database").to_numpy()
        & np.isin(ranked["component"].to_numpy(), fresh["component"].to_numpy())
    ]
    shop = (
        shop.assign(upper=shop["source_customer_id"].str.upper())
        .drop_duplicates(["component", "upper"])
        .set_index(["component", "upper"])["source_customer_id"]
    )
    named = pd.MultiIndex.from_arrays(
        [fresh["component"].to_numpy(), fresh["source_customer_id"].str.upper().to_numpy()]
    )
    spelling = pd.Series(shop.reindex(named).to_numpy(), index=fresh.index, dtype=object)
    # A CRM id no shop record spells is named upper-cased: the CRM spells its ids loosely, and a
    # person's name must not depend on which spelling came first.
    crm_best = (fresh["source"] == "crm").to_numpy()
    return spelling.where(
        crm_best & spelling.notna().to_numpy(),
        fresh["source_customer_id"].where(~crm_best, fresh["source_customer_id"].str.upper()),
    )


def _new_ids(best: pd.DataFrame, shop_spelling: pd.Series, used: pa.Array) -> pd.Series:
    """Ids for persons seen for the first time: the best record's id as the shop spells it (an ERP
    record's as ``erp:<id>``), or, when a person already has that id, with a numbered suffix
    (``~2``)."""
    prefix = np.where(best["source"] == "erp", "erp:", "")
    candidate = pd.Series(prefix, index=best.index, dtype="str") + shop_spelling.astype("str")
    clash = is_in(candidate, used) | candidate.duplicated(keep=False).to_numpy()
    if not clash.any():
        return candidate
    out = candidate.to_numpy(dtype=object).copy()
    taken = set(used.tolist()) | set(candidate[~clash].tolist())
    for position in np.flatnonzero(clash)[
        np.argsort(candidate[clash].to_numpy(dtype=object), kind="stable")
    ]:
        name, n = out[position], 2
        while name in taken:
            name, n = f"{out[position]}~{n}", n + 1
        out[position] = name
        taken.add(name)
    return pd.Series(out, index=best.index, dtype="str")


def merges_of(records: pd.DataFrame, survivor: pd.Series, retired: pd.DataFrame) -> pd.DataFrame:
    """Each retired person's id, the id it merged into and the kinds of link that joined them."""
    return pd.DataFrame(
        {
            "retired_id": retired["customer_id"].astype("str").to_numpy(),
            "surviving_id": survivor.reindex(retired["component"]).astype("str").to_numpy(),
            "matched_on": merged_on(records, retired["component"]).to_numpy(),
        }
    )


def final_survivors(merges: pd.DataFrame) -> dict[str, str]:
    """Each retired person's id -> the id of the person it lives on in now, following chains of
    merges (A into B, later B into C: A -> C). ``merges`` has retired_id, surviving_id and
    week_start."""
    ordered = merges.sort_values("week_start", kind="stable") if "week_start" in merges else merges
    into = dict(
        zip(
            ordered["retired_id"].astype("str"), ordered["surviving_id"].astype("str"), strict=False
        )
    )
    final = {}
    for retired in into:
        seen, current = {retired}, into[retired]
        # a cycle cannot come from merges, but never loop
        while current in into and current not in seen:
            seen.add(current)
            current = into[current]
        final[retired] = current
    return final


def follow(ids: pd.Series, survivors: dict[str, str]) -> pd.Series:
    """``ids`` with every retired person's id replaced by its final survivor's."""
    if not survivors:
        return ids
    mapped = ids.map(pd.Series(survivors, dtype="str"))
    return ids.where(mapped.isna(), mapped)
