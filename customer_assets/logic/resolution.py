"""Identity resolution: one real customer (a person) across the CRM, the ERP and the transaction database, and
across weeks.

Records are linked when they share the keyed hash of an email, the keyed hash of a phone, or an id (compared
without case across the CRM and the shop, which share ids; an ERP id, from an id space of its own, as
``erp:<id>``); linked records are one person (the connected components of those links). The identity is carried
from week to week (``carry_identity``): a person keeps its id for good, new persons are named by their best
record (the CRM before the ERP before the database, then the most recent), and persons that a week shows to
be one are merged into the one of their best record, the merge recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.logic.identity import (
    arrow_text,
    is_in,
    keyed_hash,
    phone_digits,
    standardise_ids,
    valid_emails,
)

PRIORITY = {"crm": 0, "erp": 1, "database": 2}
LINKS = ("email_hash", "phone_hash", "id_link")
MAP_COLUMNS = ["customer_id", "source", "source_customer_id", "matched_on", "is_primary"]


def standardise_erp(raw: pd.DataFrame, hash_key: str) -> tuple[pd.DataFrame, dict]:
    """ERP records with standardised ids, emails and phones hashed as the CRM's are; the most recently
    modified record of an id is kept."""
    emails = valid_emails(raw["email"])
    frame = pd.DataFrame(
        {
            "customer_id": standardise_ids(raw["customer_id"]),
            "email_hash": keyed_hash(emails, hash_key),
            "phone_hash": keyed_hash(phone_digits(raw["phone"]), hash_key),
            "country": raw["country"].astype("str"),
            "updated_at": pd.to_datetime(raw["updated_at"], utc=True).astype("datetime64[ns, UTC]"),
            "source": "erp",
        }
    )
    before = len(frame)
    frame = (
        frame.dropna(subset=["customer_id"])
        .sort_values(["customer_id", "updated_at"], kind="stable")
        .drop_duplicates("customer_id", keep="last")
        .reset_index(drop=True)
    )
    counts = {
        "records": before,
        "invalid_emails": int((raw["email"].notna() & emails.isna()).sum()),
        "duplicate_ids": before - len(frame),
    }
    return frame, counts


def _components(records: pd.DataFrame, links: tuple[str, ...] = LINKS) -> np.ndarray:
    """For each record, the smallest position among the records it is linked to, directly or not: labels
    spread through each shared key (integer codes, factorized once) until nothing changes."""
    label = np.arange(len(records))
    keys = []
    for key in links:
        codes, uniques = pd.factorize(records[key])  # missing values get -1
        present = codes >= 0
        if present.any():
            keys.append((codes[present], present, len(uniques)))
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


IDENTITY_COLUMNS = [
    "customer_id",
    "source",
    "source_customer_id",
    "matched_on",
    "is_primary",
    "email_hash",
    "phone_hash",
    "updated_at",
    "first_seen_week",
    "last_seen_week",
]
MERGE_COLUMNS = ["retired_id", "surviving_id", "matched_on"]
_RECORD = ["source", "source_customer_id"]
_TS = "datetime64[ns, UTC]"


@dataclass
class Resolution:
    """A week's identity: every record known as of the week with its person (``IDENTITY_COLUMNS``), the
    persons merged into another this week (``MERGE_COLUMNS``), and counts for the metadata."""

    identity: pd.DataFrame
    merges: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def _no_text(index: pd.Index) -> pd.Series:
    """A text column with no value: missing as the text of the runtime's dtype represents it."""
    return pd.Series("", index=index, dtype="str").where(pd.Series(False, index=index), None)


def week_records(crm: pd.DataFrame, erp: pd.DataFrame, database_ids: pd.Series) -> pd.DataFrame:
    """The week's records of the three sources as one frame: source, source id (trimmed, case kept), the keyed
    email and phone hashes, the record's update time (the database's ids have neither contact nor time)."""
    database = pd.DataFrame(
        {"customer_id": standardise_ids(pd.Series(database_ids, dtype="str")).dropna().unique()}
    )
    parts = []
    for frame, source in ((crm, "crm"), (erp, "erp"), (database, "database")):
        if not len(frame):
            continue
        part = pd.DataFrame(
            {"source": source, "source_customer_id": frame["customer_id"].astype("str")}
        )
        for column in ("email_hash", "phone_hash"):
            part[column] = (
                frame[column].astype("str").where(frame[column].notna(), None)
                if column in frame
                else _no_text(frame.index)
            )
        part["updated_at"] = (
            pd.to_datetime(frame["updated_at"], utc=True)
            if "updated_at" in frame
            else pd.Series(pd.NaT, index=frame.index, dtype=_TS)
        )
        parts.append(part)
    if not parts:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=_TS if c == "updated_at" else "str")
                for c in [*_RECORD, "email_hash", "phone_hash", "updated_at"]
            }
        )
    records = pd.concat(parts, ignore_index=True)
    records["updated_at"] = records["updated_at"].astype(_TS)
    return records.drop_duplicates(_RECORD, keep="last").reset_index(drop=True)


def _id_links(records: pd.DataFrame, week_start) -> tuple[pd.Series, int]:
    """What each record links on by id, and how many id collisions the week's records are in.

    The shop (``database``) and the ERP are systems of record: two of their ids equal but for case (``C1``,
    ``c1``) are two customers, who link on their exact ids (ID_COLLISION); other ids link without case. The ERP's
    ids link only among themselves (``erp:`` before them). The CRM's ids refer to the shop's customers, spelled
    loosely: a CRM id links to the shop's record of that exact id, else to the one shop record equal to it but
    for case, else (no shop record) without case."""
    ids = records["source_customer_id"].astype("str")
    erp = (records["source"] == "erp").to_numpy()
    upper = ids.str.upper()
    prefix = pd.Series(np.where(erp, "erp:", ""), index=records.index, dtype="str")
    frame = pd.DataFrame({"source": records["source"], "upper": upper, "id": ids})
    of_record = frame[records["source"] != "crm"]
    colliding_group = of_record.groupby(["source", "upper"])["id"].transform("nunique") > 1
    colliding = pd.Series(False, index=records.index)
    colliding[of_record.index] = colliding_group.to_numpy()
    link = (prefix + upper).where(~colliding, prefix + ids)
    # The CRM's ids, resolved against the shop's.
    crm = (records["source"] == "crm").to_numpy()
    shop = frame[records["source"] == "database"]
    shop_link = link[shop.index]
    exact_shop = pd.Series(shop_link.to_numpy(), index=shop["id"].to_numpy())
    exact_shop = exact_shop[~exact_shop.index.duplicated()]
    single = shop.assign(link=shop_link)[~colliding[shop.index].to_numpy()].drop_duplicates("upper")
    by_upper = pd.Series(single["link"].to_numpy(), index=single["upper"].to_numpy())
    crm_ids = ids[crm]
    resolved = crm_ids.map(exact_shop).fillna(upper[crm].map(by_upper)).fillna(upper[crm])
    link[crm] = resolved.to_numpy()
    this_week = (pd.to_datetime(records["last_seen_week"]) == pd.Timestamp(week_start)).to_numpy()
    week_colliding = frame[colliding.to_numpy() & this_week]
    groups = frame[colliding.to_numpy()].merge(
        week_colliding[["source", "upper"]].drop_duplicates(), on=["source", "upper"]
    )
    collisions = int(
        groups.drop_duplicates(["source", "id"]).shape[0]
        - groups.drop_duplicates(["source", "upper"]).shape[0]
    )
    return link.astype("str"), collisions


def _new_ids(best: pd.DataFrame, shop_spelling: pd.Series, used: pd.Series) -> pd.Series:
    """Ids for persons seen for the first time: the best record's id as the shop spells it (an ERP record's as
    ``erp:<id>``), or, when a person already has that id, with a numbered suffix (``~2``)."""
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


def _naive(week_start: pd.Timestamp) -> pd.Timestamp:
    """The week's start as the identity's week columns hold it: naive, in UTC."""
    return week_start.tz_convert(None) if week_start.tzinfo else week_start


def _with_carried(
    prior: pd.DataFrame, records: pd.DataFrame, week_start: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The carried records the week does not hold (kept as they are), and the week's records with
    the person and the first week the carried identity gives them (none and this week for a record
    new to it)."""
    week = records.assign(last_seen_week=week_start)
    if len(prior):
        prior = prior[IDENTITY_COLUMNS].copy()
        seen = (
            prior.merge(week[_RECORD], on=_RECORD, how="left", indicator=True)["_merge"]
            .eq("both")
            .to_numpy()
        )
        kept = prior[~seen]
        known = prior[seen][[*_RECORD, "customer_id", "first_seen_week"]]
        week = week.merge(known, on=_RECORD, how="left")
    else:
        kept = prior.reindex(columns=IDENTITY_COLUMNS).iloc[:0]
        week = week.assign(
            customer_id=pd.Series(None, index=week.index, dtype="str"), first_seen_week=pd.NaT
        )
    week["first_seen_week"] = (
        pd.to_datetime(week["first_seen_week"]).fillna(week_start).clip(upper=week_start)
    )
    return kept, week


def _ranked(records: pd.DataFrame) -> pd.DataFrame:
    """The records by component, each component's best record first (the CRM before the ERP before
    the database, then the most recent)."""
    return records.assign(rank=records["source"].map(PRIORITY)).sort_values(
        ["component", "rank", "updated_at", "source_customer_id"],
        ascending=[True, True, False, True],
        kind="stable",
        na_position="last",
    )


def _merges(records: pd.DataFrame, survivor: pd.Series, retired: pd.DataFrame) -> pd.DataFrame:
    """Each retired person's id, the id it merged into and the kinds of link that joined them."""
    return pd.DataFrame(
        {
            "retired_id": retired["customer_id"].astype("str").to_numpy(),
            "surviving_id": survivor.reindex(retired["component"]).astype("str").to_numpy(),
            "matched_on": _merged_on(records, retired["component"]).to_numpy(),
        }
    )


def _person_ids(
    ranked: pd.DataFrame, survivor: pd.Series, used: pd.Series
) -> tuple[pd.Series, int]:
    """Each component's person id (by component): its surviving person's, or for a component without
    one a new id named by its best record (a CRM record as the shop spells the id), none of ``used``.
    Also how many persons are new."""
    best = ranked.drop_duplicates("component")
    fresh = best[~best["component"].isin(survivor.index)]
    new_ids = pd.Series(
        _new_ids(fresh, _spelling(ranked, fresh), used).to_numpy(),
        index=fresh["component"].to_numpy(),
        dtype=object,
    )
    return pd.concat([part for part in (survivor, new_ids) if len(part)]), len(fresh)


def _survivors(ranked: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Each component's surviving person (that of its best record with a person), and a record of
    each other person of the component: those merge into it and are retired (``ranked``: each
    component's best record first)."""
    with_person = ranked[ranked["customer_id"].notna()]
    survivor = with_person.drop_duplicates("component").set_index("component")["customer_id"]
    persons = with_person.drop_duplicates(["component", "customer_id"])
    retired = persons[
        persons["customer_id"].to_numpy() != survivor.reindex(persons["component"]).to_numpy()
    ]
    return survivor, retired


def _spelling(ranked: pd.DataFrame, fresh: pd.DataFrame) -> pd.Series:
    """The id each new person (``fresh``: the best record of a component without one) is named by:
    the id as a shop record of the component spells it, else the best record's own id."""
    shop = ranked[ranked["source"] == "database"]
    shop = (
        shop.assign(upper=shop["source_customer_id"].str.upper())
        .drop_duplicates(["component", "upper"])
        .set_index(["component", "upper"])["source_customer_id"]
    )
    named = pd.MultiIndex.from_arrays(
        [fresh["component"].to_numpy(), fresh["source_customer_id"].str.upper().to_numpy()]
    )
    spelling = pd.Series(shop.reindex(named).to_numpy(), index=fresh.index, dtype=object)
    # A CRM id no shop record spells is named upper-cased: the CRM spells its ids loosely, and a person's name
    # must not depend on which spelling came first.
    crm_best = (fresh["source"] == "crm").to_numpy()
    return spelling.where(
        crm_best & spelling.notna().to_numpy(),
        fresh["source_customer_id"].where(~crm_best, fresh["source_customer_id"].str.upper()),
    )


def carry_identity(prior: pd.DataFrame, records: pd.DataFrame, week_start) -> Resolution:
    """The identity as of the week: ``prior`` (the identity carried from an earlier week, ``IDENTITY_COLUMNS``)
    updated with the week's ``records`` (``week_records``).

    Records are linked by a shared keyed email hash, keyed phone hash or id (``_id_links``), and by the person
    the carried identity already gives them; linked records are one person. A person keeps its id for good.
    Records new to everyone make a new person, named by its best record (the CRM before the ERP before the
    database, then the most recent). Where the week links records of several persons, they are merged into one:
    the person of the best of their records survives, the others are retired (``merges``).
    """
    week_start = _naive(pd.Timestamp(week_start))
    kept, week = _with_carried(prior, records, week_start)
    frames = [_typed(f) for f in (kept, week.reindex(columns=IDENTITY_COLUMNS)) if len(f)]
    if not frames:
        return Resolution(
            _typed(week.reindex(columns=IDENTITY_COLUMNS)), _empty_merges(), _counts()
        )
    every = pd.concat(frames, ignore_index=True)
    every["updated_at"] = pd.to_datetime(every["updated_at"], utc=True).astype(_TS)
    # Only the records the week's can reach (through any key, or a person) can change: the others are carried
    # as they are, so the week costs what its records touch, not the whole identity.
    touched = _reachable(every, (every["last_seen_week"] == week_start).to_numpy())
    untouched = every[~touched]
    every = every[touched].reset_index(drop=True)
    if every.empty:  # a week without records: the identity as carried
        return Resolution(
            untouched[IDENTITY_COLUMNS].reset_index(drop=True),
            _empty_merges(),
            _counts(records=len(untouched), persons=int(untouched["customer_id"].nunique())),
        )
    every["id_link"], collisions = _id_links(every, week_start)
    every["person_link"] = every["customer_id"]
    every["component"] = _components(every, (*LINKS, "person_link"))
    ranked = _ranked(every)
    survivor, retired = _survivors(ranked)
    used = pd.concat([every["customer_id"], untouched["customer_id"]]).dropna().astype("str")
    names, new_persons = _person_ids(ranked, survivor, used)
    every["customer_id"] = names.reindex(every["component"]).to_numpy()
    every["matched_on"] = _matched_on(every)
    primary = ranked.drop_duplicates("component").index  # components and persons are one now
    every["is_primary"] = False
    every.loc[primary, "is_primary"] = True
    merges = _merges(every, survivor, retired)
    changed = _typed(every[IDENTITY_COLUMNS]).sort_values(
        ["customer_id", "source", "source_customer_id"]
    )
    identity = pd.concat(
        [part for part in (untouched[IDENTITY_COLUMNS], changed) if len(part)], ignore_index=True
    )
    counts = _counts(
        records=len(identity),
        persons=int(identity["customer_id"].nunique()),
        new_persons=new_persons,
        merged_persons=len(merges),
        id_collisions=collisions,
        week_records=len(records),
    )
    return Resolution(identity, merges.sort_values("retired_id", ignore_index=True), counts)


def _reachable(records: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """The records linked to the ``start`` ones, directly or not, through a keyed email or phone hash, an id
    compared without case (a superset of the id links) or a person."""

    def text(values: pd.Series) -> pa.ChunkedArray:
        return arrow_text(
            values.astype("str").where(values.notna(), None) if values.dtype == object else values
        )

    ids = pc.utf8_upper(text(records["source_customer_id"]))
    erp = text(records["source"]).to_numpy(zero_copy_only=False) == "erp"
    tag = pa.scalar("erp:", pa.large_string())
    ids = pc.if_else(
        pa.array(erp), pc.binary_join_element_wise(tag, ids, pa.scalar("", pa.large_string())), ids
    )
    keys = [
        text(records["email_hash"]),
        text(records["phone_hash"]),
        text(records["customer_id"]),
        ids,
    ]
    touched = start.copy()
    while True:
        grown = touched.copy()
        mask = pa.array(touched)
        for key in keys:
            values = pc.unique(key.filter(mask)).drop_null()
            if len(values):
                grown |= (
                    pc.is_in(key, value_set=values).fill_null(False).to_numpy(zero_copy_only=False)
                )
        if (grown == touched).all():
            return touched
        touched = grown


def _merged_on(records: pd.DataFrame, components: pd.Series) -> pd.Series:
    """For each component of a merge, the kinds of link ('email', 'phone', 'id', joined by '+') that connect records
    of different persons (or records new this week) in it."""
    rows = records[records["component"].isin(components)]
    group = rows["person_link"].where(
        rows["person_link"].notna(), "new:" + rows.index.astype("str")
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


def _matched_on(records: pd.DataFrame) -> pd.Series:
    """What links each record to the others of its person (the keyed email hash before the phone before the id);
    'self' when nothing does."""
    matched = pd.Series("self", index=records.index, dtype="object")
    for key, name in (("id_link", "id"), ("phone_hash", "phone"), ("email_hash", "email")):
        shared = records[key].notna() & records.duplicated(["customer_id", key], keep=False)
        matched[shared.to_numpy()] = name
    return matched.astype("str")


def _typed(identity: pd.DataFrame) -> pd.DataFrame:
    out = identity.copy()
    for column in (
        "customer_id",
        "source",
        "source_customer_id",
        "matched_on",
        "email_hash",
        "phone_hash",
    ):
        if out[column].dtype != "str":  # text read back from a warehouse already is
            out[column] = out[column].astype("str").where(out[column].notna(), None)
    out["is_primary"] = out["is_primary"].astype("boolean").fillna(False).astype(bool)
    out["updated_at"] = pd.to_datetime(out["updated_at"], utc=True).astype(_TS)
    for column in ("first_seen_week", "last_seen_week"):
        out[column] = pd.to_datetime(out[column]).astype("datetime64[ns]")
    return out


def _empty_merges() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="str") for c in MERGE_COLUMNS})


def _counts(**given: int) -> dict[str, int]:
    names = ("records", "persons", "new_persons", "merged_persons", "id_collisions", "week_records")
    return {name: int(given.get(name, 0)) for name in names}


def final_survivors(merges: pd.DataFrame) -> dict[str, str]:
    """Each retired person's id -> the id of the person it lives on in now, following chains of merges (A into
    B, later B into C: A -> C). ``merges`` has retired_id, surviving_id and week_start."""
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


def resolve(crm: pd.DataFrame, erp: pd.DataFrame, database_ids: pd.Series) -> pd.DataFrame:
    """The identity of one week's records alone (no carried identity): one row per source record
    (``MAP_COLUMNS``), ``customer_id`` being the resolved person's id."""
    resolution = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(crm, erp, database_ids),
        pd.Timestamp("1970-01-05"),
    )
    return resolution.identity[MAP_COLUMNS]
