"""Identity resolution: one real customer (a person) across the CRM, the ERP and the transaction
database, and across weeks.

Records are linked when they share the keyed hash of an email, the keyed hash of a phone, or an id
(compared without case across the CRM and the shop, which share ids; an ERP id, from an id space of
its own, as ``erp:<id>``); linked records are one person (the connected components of those
links). The identity is carried from week to week (``carry_identity``): a person keeps its id for
good, new persons are named by their best record (the CRM before the ERP before the database, then
the most recent), and persons that a week shows to be one are merged into the one of their best
record, the merge recorded.

The records read are source_records.py's, the links identity_links.py's, the names and merges
person_naming.py's; this module carries the identity from week to week with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.logic.identity import arrow_text, distinct_ids, text_codes
from customer_assets.logic.identity_links import LINKS, components, id_links, matched_on, reachable
from customer_assets.logic.person_naming import best_first, merges_of, person_ids, survivors
from customer_assets.logic.source_records import RECORD, week_records

MAP_COLUMNS = ["customer_id", "source", "source_customer_id", "matched_on", "is_primary"]
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
HASHES = ("email_hash", "phone_hash")
_TS = "datetime64[ns, UTC]"


@dataclass
class Resolution:
    """A week's identity: every record known as of the week with its person (``IDENTITY_COLUMNS``),
    the persons merged into another this week (``MERGE_COLUMNS``), and counts for the metadata."""

    identity: pd.DataFrame
    merges: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def _naive(week_start: pd.Timestamp) -> pd.Timestamp:
    """The week's start as the identity's week columns hold it: naive, in UTC."""
    return week_start.tz_convert(None) if week_start.tzinfo else week_start


def _with_carried(
    prior: pd.DataFrame, records: pd.DataFrame, week_start: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The carried records the week does not hold (kept as they are), and the week's records with
    the person and the first week the carried identity gives them (none and this week for a record
    new to it)."""
    week = records.reset_index(drop=True).assign(last_seen_week=week_start)
    if len(prior):
        prior = prior[IDENTITY_COLUMNS]
        # each week record's position among the carried ones (-1: new), by one hash lookup
        at = pc.index_in(_record_keys(week), value_set=_record_keys(prior))
        at = at.fill_null(-1).to_numpy(zero_copy_only=False)
        found = at >= 0
        seen = np.zeros(len(prior), dtype=bool)
        seen[at[found]] = True
        kept = prior[~seen]
        known = prior[["customer_id", "first_seen_week"]].iloc[np.where(found, at, 0)]
        known = known.reset_index(drop=True).mask(pd.Series(~found), axis=0)
        week = week.assign(
            customer_id=known["customer_id"], first_seen_week=known["first_seen_week"]
        )
    else:
        kept = prior.reindex(columns=IDENTITY_COLUMNS).iloc[:0]
        week = week.assign(
            customer_id=pd.Series(None, index=week.index, dtype="str"), first_seen_week=pd.NaT
        )
    week["first_seen_week"] = (
        pd.to_datetime(week["first_seen_week"]).fillna(week_start).clip(upper=week_start)
    )
    return kept, week


def _record_keys(frame: pd.DataFrame) -> pa.ChunkedArray:
    """Each record's name (``RECORD``: its source and its id there) as one text, with a separator
    neither holds."""
    return pc.binary_join_element_wise(
        *(arrow_text(frame[column]) for column in RECORD), pa.scalar("\x1f", pa.large_string())
    )


def carry_identity(
    prior: pd.DataFrame,
    records: pd.DataFrame,
    week_start,
    also_used: pd.Series | None = None,
) -> Resolution:
    """The identity as of the week: ``prior`` (the identity carried from an earlier week,
    ``IDENTITY_COLUMNS``) updated with the week's ``records`` (``week_records``).

    Records are linked by a shared keyed email hash, keyed phone hash or id (``id_links``), and by
    the person the carried identity already gives them; linked records are one person. A person
    keeps its id for good. Records new to everyone make a new person, named by its best record (the
    CRM before the ERP before the database, then the most recent). Where the week links records of
    several persons, they are merged into one: the person of the best of their records survives, the
    others are retired (``merges``).

    ``prior`` may be only the carried records the week's reach (``sql/identity.py``): ``also_used``
    then names the ids the persons left in the warehouse hold, which a new person must not take."""
    return carry_handed_over({"prior": prior, "records": records}, week_start, also_used)


def carry_handed_over(
    handed: dict[str, pd.DataFrame], week_start, also_used: pd.Series | None = None
) -> Resolution:
    """``carry_identity`` of ``handed["prior"]`` and ``handed["records"]``, taken out of ``handed``:
    a caller holding no other reference to them lets the carried and the week's records go once
    they are copied, instead of holding them to the end (at 10M rows a week, GBs)."""
    prior, records = handed.pop("prior"), handed.pop("records")
    week_start, week_count = _naive(pd.Timestamp(week_start)), len(records)
    kept, week = _with_carried(prior, records, week_start)
    del prior, records
    # both are frames of their own (a selection and a reindex): typed in place, not copied again
    frames = [
        _typed(f, copy=False) for f in (kept, week.reindex(columns=IDENTITY_COLUMNS)) if len(f)
    ]
    if not frames:
        empty = _typed(week.reindex(columns=IDENTITY_COLUMNS))
        return Resolution(empty, _empty_merges(), _counts())
    # each frame below is a copy: what is copied is let go at once (a 10M-row week holds millions
    # of records, and every copy held to the end adds to the step's peak)
    combined = pd.concat(frames, ignore_index=True)
    del kept, week, frames
    every, hashes, untouched = _touched(combined, week_start)
    del combined
    if every.empty:  # a week without records: the identity as carried
        return Resolution(
            untouched[IDENTITY_COLUMNS].reset_index(drop=True),
            _empty_merges(),
            _counts(records=len(untouched), persons=len(distinct_ids(untouched["customer_id"]))),
        )
    merges, new_persons, collisions = _name_persons(
        every, [untouched["customer_id"], also_used], week_start
    )
    every[list(HASHES)] = hashes  # the keyed hashes as text again, for the identity written
    del hashes
    changed = every[IDENTITY_COLUMNS]  # a copy: the working columns go with ``every``
    del every
    changed = _typed(changed, copy=False)
    # every record reached (a week that reads the carried partition whole, mostly) leaves nothing
    # untouched: the changed records are the identity, not copied once more by a concatenation
    identity = (
        pd.concat([untouched[IDENTITY_COLUMNS], changed], ignore_index=True)
        if len(untouched)
        else changed
    )
    del untouched, changed
    counts = _counts(
        records=len(identity),
        persons=len(distinct_ids(identity["customer_id"])),
        new_persons=new_persons,
        merged_persons=len(merges),
        id_collisions=collisions,
        week_records=week_count,
    )
    return Resolution(identity, merges.sort_values("retired_id", ignore_index=True), counts)


def _name_persons(
    every: pd.DataFrame, held: list[pd.Series | None], week_start
) -> tuple[pd.DataFrame, int, int]:
    """Links the records the week can change (``every``, ``_touched``'s) into persons and names
    each record's person in place (``customer_id``, ``matched_on``, ``is_primary``); ``held``: the
    ids persons hold outside them, which a new person must not take. Returns the week's merges, how
    many persons are new, and the id collisions."""
    # the links as integer codes, each text factorized once here rather than by every step below
    id_link, collisions = id_links(every, week_start)
    every["id_link"], every["person_link"] = text_codes(id_link), text_codes(every["customer_id"])
    del id_link
    every["component"] = components(every, (*LINKS, "person_link"))
    ranked = best_first(every[["component", "person_link", "customer_id", *RECORD, "updated_at"]])
    survivor, retired = survivors(ranked)
    used = distinct_ids(every["customer_id"], *(ids for ids in held if ids is not None))
    names, new_persons = person_ids(ranked, survivor, used)
    names = names.reindex(every["component"])  # the text kept in Arrow, not made Python objects
    names.index = every.index
    every["customer_id"] = names
    del names, used
    # components and persons are one now: a component's code is its person's
    every["matched_on"] = matched_on(every, every["component"].to_numpy())
    every["is_primary"] = False
    every.loc[ranked.drop_duplicates("component").index, "is_primary"] = True
    return merges_of(every, survivor, retired), new_persons, collisions


def _touched(every: pd.DataFrame, week_start) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The records the week's can reach (through any key, or a person), which alone can change, and
    the others, carried as they are: the week costs what its records touch, not the whole
    identity.

    The records that can change hold their keyed hashes as integer codes (``text_codes``): the
    hashes are 64 characters each, most of the records' bytes, and they only link records, which
    equal codes do as well. Their text is returned aside, in the records' order."""
    every["updated_at"] = pd.to_datetime(every["updated_at"], utc=True).astype(_TS)
    hashes = every[list(HASHES)]
    # what the week recomputes (matched_on, is_primary) is not carried through
    coded = every.drop(columns=["matched_on", "is_primary"]).assign(
        **{column: text_codes(every[column]) for column in HASHES}
    )
    touched = reachable(coded, (every["last_seen_week"] == week_start).to_numpy())
    return (
        coded[touched].reset_index(drop=True),
        hashes[touched].reset_index(drop=True),
        every[~touched],
    )


def _typed(identity: pd.DataFrame, copy: bool = True) -> pd.DataFrame:
    """The identity's columns of their declared types (``copy=False``: in place, for a frame the
    caller owns)."""
    out = identity.copy() if copy else identity
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
    if out["is_primary"].dtype != bool:
        out["is_primary"] = out["is_primary"].astype("boolean").fillna(False).astype(bool)
    # columns already of their type are left alone (a pass over every record each)
    if out["updated_at"].dtype != _TS:
        out["updated_at"] = pd.to_datetime(out["updated_at"], utc=True).astype(_TS)
    for column in ("first_seen_week", "last_seen_week"):
        if out[column].dtype != "datetime64[ns]":
            out[column] = pd.to_datetime(out[column]).astype("datetime64[ns]")
    return out


def _empty_merges() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="str") for c in MERGE_COLUMNS})


def _counts(**given: int) -> dict[str, int]:
    names = ("records", "persons", "new_persons", "merged_persons", "id_collisions", "week_records")
    return {name: int(given.get(name, 0)) for name in names}


def resolve(crm: pd.DataFrame, erp: pd.DataFrame, database_ids: pd.Series) -> pd.DataFrame:
    """The identity of one week's records alone (no carried identity): one row per source record
    (``MAP_COLUMNS``), ``customer_id`` being the resolved person's id."""
    resolution = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(crm, erp, database_ids),
        pd.Timestamp("1970-01-05"),
    )
    return resolution.identity[MAP_COLUMNS]
