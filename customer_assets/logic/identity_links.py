"""How the records of identity resolution link: by a shared keyed email or phone hash, or by id
(``id_links``: the id spaces of the shop, the ERP and the CRM), and the persons the links make
(``components``). Also which records a week can reach (``reachable``) and what a link was made
of (``merged_on``, ``matched_on``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from customer_assets.logic.identity import is_in

LINKS = ("email_hash", "phone_hash", "id_link")


def components(records: pd.DataFrame, links: tuple[str, ...] = LINKS) -> np.ndarray:
    """For each record, the smallest position among the records it is linked to, directly or not:
    labels spread through each shared key (integer codes, factorized once) until nothing changes."""
    label = np.arange(len(records))
    keys = []
    for key in links:
        codes = _codes(records[key])  # missing values -1
        present = codes >= 0
        if present.any():
            keys.append((codes[present], present, int(codes.max()) + 1))
    while True:
        before = label.copy()
        for codes, present, size in keys:
            smallest = np.full(size, len(label))
            np.minimum.at(smallest, codes, label[present])
            label[present] = np.minimum(label[present], smallest[codes])
        label = label[
            label
        ]  # follow each label to its own label: components collapse in few rounds
        if np.array_equal(label, before):
            return label


def id_links(records: pd.DataFrame, week_start) -> tuple[pd.Series, int]:
    """What each record links on by id, and how many id collisions the week's records are in.

    The shop (``database``) and the ERP are systems of record: two of their ids equal but for case
    (``C1``, ``c1``) are two customers, who link on their exact ids (ID_COLLISION); other ids link
    without case. The ERP's ids link only among themselves (``erp:`` before them). The CRM's ids
    refer to the shop's customers, spelled loosely: a CRM id links to the shop's record of that
    exact id, else to the one shop record equal to it but for case, else (no shop record) without
    case. Since a shop id that collides with none links without case, a CRM id links on its exact
    spelling only when it is one of the shop's colliding ids, and without case otherwise."""
    ids = records["source_customer_id"].astype("str")
    source = records["source"]
    upper = ids.str.upper()
    frame = pd.DataFrame({"source": source, "upper": upper, "id": ids})
    colliding = _colliding(frame[(source != "crm").to_numpy()]).reindex(
        records.index, fill_value=False
    )
    crm = (source == "crm").to_numpy()
    shop_colliding = frame["id"][colliding.to_numpy() & (source == "database").to_numpy()]
    exact = colliding.to_numpy() | (crm & is_in(ids, shop_colliding))
    erp = (source == "erp").to_numpy()
    link = pd.Series(np.where(exact, ids, upper), index=records.index, dtype="str")
    link[erp] = "erp:" + link[erp]
    this_week = (pd.to_datetime(records["last_seen_week"]) == pd.Timestamp(week_start)).to_numpy()
    week_colliding = frame[colliding.to_numpy() & this_week]
    groups = frame[colliding.to_numpy()].merge(
        week_colliding[["source", "upper"]].drop_duplicates(), on=["source", "upper"]
    )
    collisions = int(
        groups.drop_duplicates(["source", "id"]).shape[0]
        - groups.drop_duplicates(["source", "upper"]).shape[0]
    )
    return link, collisions


def _colliding(of_record: pd.DataFrame) -> pd.Series:
    """For records of a system of record (``source``, ``upper``, ``id``), whether another id of
    their source equals theirs but for case."""
    distinct = of_record.drop_duplicates(["source", "id"])
    clashing = distinct[distinct.duplicated(["source", "upper"], keep=False)]
    if clashing.empty:  # the usual week: every id spelled one way
        return pd.Series(False, index=of_record.index)
    pairs = pd.MultiIndex.from_frame(clashing[["source", "upper"]])
    inside = pd.MultiIndex.from_frame(of_record[["source", "upper"]]).isin(pairs)
    return pd.Series(inside, index=of_record.index)


def reachable(records: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """The records linked to the ``start`` ones, directly or not, through a keyed email or phone
    hash, an id compared without case (a superset of the id links) or a person.

    Each key is factorized once into integer codes; a round marks the codes the reached records
    hold and reaches every record holding one (NumPy over integers: comparing the text again in
    each round cost 1.1-1.7 s for a 1M-row week's 1.1M records)."""
    ids = records["source_customer_id"]
    ids = ids.astype("str").where(ids.notna(), None).str.upper()
    erp = (records["source"] == "erp").to_numpy(dtype=bool, na_value=False)
    keys = [
        pd.factorize(values)[0]  # missing values get -1: they link nothing
        for values in (
            records["email_hash"],
            records["phone_hash"],
            records["customer_id"],
            ids.where(~erp, "erp:" + ids),
        )
    ]
    touched = np.asarray(start, dtype=bool).copy()
    while True:
        grown = touched.copy()
        for codes in keys:
            marked = np.zeros(codes.max(initial=-1) + 2, dtype=bool)  # the last slot: missing (-1)
            marked[codes[touched]] = True
            marked[-1] = False
            grown |= marked[codes]
        if (grown == touched).all():
            return touched
        touched = grown


def merged_on(records: pd.DataFrame, components: pd.Series) -> pd.Series:
    """For each component of a merge, the kinds of link ('email', 'phone', 'id', joined by '+') that
    connect records of different persons (or records new this week) in it (``person_link``: each
    record's person as an integer code, missing for a record new this week)."""
    rows = records[records["component"].isin(components)]
    person = rows["person_link"]
    # a record new this week is a group of its own: negative, apart from every person's code
    group = np.where(
        person.notna().to_numpy(),
        person.to_numpy(dtype=np.int64, na_value=-1),
        -1 - np.arange(len(rows)),
    )
    kinds: dict[int, list[str]] = {}
    for key, name in (("email_hash", "email"), ("phone_hash", "phone"), ("id_link", "id")):
        linked = pd.DataFrame(
            {"component": rows["component"], "value": rows[key], "group": group}
        ).dropna()
        across = linked.groupby(["component", "value"])["group"].nunique()
        for component in across[across > 1].index.get_level_values("component").unique():
            kinds.setdefault(component, []).append(name)
    return components.map(lambda c: "+".join(kinds.get(c, [])) or "person").astype("str")


def _codes(values: pd.Series) -> np.ndarray:
    """A key's values as integer codes, missing values -1: the codes themselves for a key already
    coded (``text_codes``), else pandas' factorization."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64, na_value=-1)
    return pd.factorize(values)[0]


def matched_on(records: pd.DataFrame, person: np.ndarray) -> pd.Series:
    """What links each record to the others of its person (``person``: each record's, as an
    integer code), the keyed email hash before the phone before the id; 'self' when nothing does.
    Each key is compared as integer codes (pandas' ``duplicated`` over two text columns factorized
    the person's text again for each key)."""
    matched = np.full(len(records), "self", dtype=object)
    person = np.asarray(person, dtype=np.int64)
    for key, name in (("id_link", "id"), ("phone_hash", "phone"), ("email_hash", "email")):
        codes = _codes(records[key])
        pairs = pd.Series(person * (int(codes.max(initial=-1)) + 2) + codes)
        shared = (codes >= 0) & pairs.duplicated(keep=False).to_numpy()
        matched[shared] = name
    return pd.Series(matched, index=records.index, dtype="str")
