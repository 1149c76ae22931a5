"""The week's sources keyed by person (``customer_identity_map``), ready for the profile build.

Each source's id is replaced by its person's, the week's event and transaction aggregates of one
person's ids (or of raw ids that standardise to one id) are combined into one row, and a person's
records are made one (the CRM's before the ERP's before the database's). Apart from the profile
build (profile_rules.py): the profile step maps its inputs before it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.logic.duckdb_memory import arrow_list, connect
from customer_assets.logic.identity import arrow_text, distinct_ids, is_in, standardise_ids

SOURCE_PRIORITY = {"crm": 0, "erp": 1, "database": 2}  # seed 004's order


def deduplicate_records(records: pd.DataFrame) -> pd.DataFrame:
    """One record per customer id: each field from CRM before database, then the most recent update.

    A field the preferred record lacks (the CRM knows no country) comes from the next record that
    has it. Records without an id are dropped; the result is ordered by id.
    """
    # Each id as the place of its text in id order (Arrow hashes and sorts the text; pandas hashed
    # Arrow text through Python, and DuckDB's grouping held an aggregation state per id and column).
    encoded = pc.dictionary_encode(arrow_text(records["customer_id"]).combine_chunks())
    ids = encoded.dictionary
    in_order = pc.sort_indices(ids)
    place = np.full(len(ids) + 1, -1, dtype=np.int64)  # the last slot: no id
    place[in_order.to_numpy()] = np.arange(len(ids))
    id_place = place[encoded.indices.fill_null(len(ids)).to_numpy()]
    rows = np.flatnonzero(id_place >= 0)  # records without an id are left out
    # The records of each id together, each id's in its order: CRM first, then the latest update
    # (records without one last), then the order they came in. Integers sorted, never the text.
    by_priority = sorted(SOURCE_PRIORITY, key=SOURCE_PRIORITY.get)
    priority = pc.index_in(
        arrow_text(records["source"]), value_set=pa.array(by_priority, pa.large_string())
    )
    updated = pd.to_datetime(records["updated_at"], utc=True)
    missing = updated.isna().to_numpy()
    newest_first = np.where(missing, 0, -updated.to_numpy(dtype="datetime64[ns]").view(np.int64))
    keys = (newest_first, missing, priority.fill_null(len(by_priority)).to_numpy(), id_place)
    order = rows[np.lexsort((rows, *(key[rows] for key in keys)))]
    group = id_place[order]
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    # Each id's record is its place's, so the ids are the dictionary's in order. Each other column
    # is taken from one contiguous array (``arrow_list``).
    columns = {"customer_id": ids.take(in_order)}
    for column in records.columns.drop("customer_id"):
        picks = _first_known(records[column], order, starts)
        columns[column] = arrow_list(records[column]).take(picks)
    return pa.table(columns).to_pandas()


def _first_known(values: pd.Series, order: np.ndarray, starts: np.ndarray) -> pa.Array:
    """For each id, the row of its first record in ``order`` whose value is known, null where none
    is (``starts``: where each id's records start in ``order``). One pass in order per column."""
    if not len(order):
        return pa.array([], pa.int64())
    at = np.where(values.notna().to_numpy()[order], np.arange(len(order)), len(order))
    first = np.minimum.reduceat(at, starts)
    none = first == len(order)
    # null where none is known (``pa.array``'s own mask argument took 20 times as long)
    picks = pa.array(order[np.where(none, 0, first)])
    return pc.if_else(pa.array(none), pa.scalar(None, pa.int64()), picks)


TRANSACTION_AGGREGATES_SQL = """
SELECT customer_id, count(*) AS week_transaction_count,
       sum(round(amount_usd * 1000000)::BIGINT) AS _spend_micro_usd,
       max("timestamp") AS last_transaction_at,
       arg_max(country, _rn) FILTER (WHERE country IS NOT NULL) AS country,
       max(_rn) FILTER (WHERE country IS NOT NULL) AS _country_rn,
       arg_max(segment, _rn) FILTER (WHERE segment IS NOT NULL) AS segment,
       max(_rn) FILTER (WHERE segment IS NOT NULL) AS _segment_rn,
       {carried} AS carried_lifetime_value_usd
FROM transactions WHERE customer_id IS NOT NULL GROUP BY customer_id
"""
TRANSACTION_AGGREGATE_COLUMNS = [
    "customer_id",
    "week_transaction_count",
    "week_spend_usd",
    "last_transaction_at",
    "country",
    "segment",
    "carried_lifetime_value_usd",
]


def transaction_aggregates_sql(columns: list[str]) -> str:
    """``TRANSACTION_AGGREGATES_SQL`` for the week's transformed transactions with ``columns``
    (DuckDB, over the relation ``transactions`` and ``_rn``, each row's place in the file): the
    carried lifetime value where the rows carry it (transformed transactions do)."""
    carried = (
        "max(customer_lifetime_value)"
        if "customer_lifetime_value" in columns
        else "CAST(NULL AS DOUBLE)"
    )
    return TRANSACTION_AGGREGATES_SQL.format(carried=carried)


def transaction_aggregates(per_raw_id: pd.DataFrame) -> pd.DataFrame:
    """Per customer id (trimmed): the week's transaction count, USD spend, last purchase, and the
    last known country and segment (in row order). Rows without an id are left out.

    ``per_raw_id`` holds the rows of ``transaction_aggregates_sql``, which DuckDB runs over the
    week's Parquet file itself (``frames.query_stored``), so the week's rows never become a
    DataFrame. Raw ids that standardise to the same id (`` c1`` and ``c1``) are combined here. USD
    amounts carry six decimals (``with_usd`` in validation), so they are summed exactly as whole
    micro-dollars: the same total in any order, on every rerun.
    """
    per_raw_id = per_raw_id.copy(deep=False)  # Copy-on-Write: columns are replaced, not written
    per_raw_id["last_transaction_at"] = per_raw_id["last_transaction_at"].astype(
        "datetime64[ns, UTC]"
    )
    per_raw_id["_spend_micro_usd"] = per_raw_id["_spend_micro_usd"].astype("int64")
    per_raw_id["customer_id"] = standardise_ids(per_raw_id["customer_id"])
    per_raw_id = per_raw_id.dropna(subset=["customer_id"])
    merged = per_raw_id["customer_id"].duplicated(keep=False).to_numpy()
    if merged.any():
        per_raw_id = pd.concat(
            [per_raw_id[~merged], _combine(per_raw_id[merged])], ignore_index=True
        )
    per_raw_id["week_spend_usd"] = per_raw_id.pop("_spend_micro_usd") / 1_000_000
    return per_raw_id[TRANSACTION_AGGREGATE_COLUMNS].sort_values("customer_id", ignore_index=True)


def _combine(parts: pd.DataFrame) -> pd.DataFrame:
    """Aggregates of raw ids that are one customer once standardised, combined into one row each."""
    grouped = parts.groupby("customer_id", sort=False)
    out = grouped.agg(
        week_transaction_count=("week_transaction_count", "sum"),
        _spend_micro_usd=("_spend_micro_usd", "sum"),
        last_transaction_at=("last_transaction_at", "max"),
    )
    # None when none of the parts carries one; grouped in Cython, not a Python call per group (1.7 s
    # for a default-scale week's 68k persons)
    out["carried_lifetime_value_usd"] = grouped["carried_lifetime_value_usd"].sum(min_count=1)
    for column in ("country", "segment"):
        known = parts.dropna(subset=[f"_{column}_rn"]).sort_values(f"_{column}_rn")
        out[column] = known.drop_duplicates("customer_id", keep="last").set_index("customer_id")[
            column
        ]
    return out.reset_index()


EVENT_SUMS = (
    "page_views",
    "unique_features_used",
    "purchase_count",
    "purchase_amount",
    "support_interactions",
)


LOOSE_PERSONS_SQL = """
SELECT key, min(person) AS person FROM records WHERE key IS NOT NULL
GROUP BY key HAVING count(DISTINCT person) = 1
"""


class PersonLookup:
    """The identity's lookups from a source's id to its person's id, each built once for the
    several frames a week maps (the profiles map five with one identity: building them for each
    was more than half of the profile step's time). The identity's text columns are taken as Arrow
    arrays without a copy; no pandas frame of its records is made or de-duplicated (at 10M rows a
    week it holds 6.8M records: pandas took 3.7 s for one source's exact ids, Arrow 0.05 s)."""

    def __init__(self, identity: pd.DataFrame):
        self._source = arrow_text(identity["source"])
        self._ids = arrow_text(identity["source_customer_id"])
        self._persons = arrow_text(identity["customer_id"])
        self._built: dict[object, tuple[pa.Array, pa.Array]] = {}

    def exact(self, source: str) -> tuple[pa.Array, pa.Array]:
        """The ids of ``source``'s records and their persons. An id a source holds twice answers
        with its first record: Arrow's ``index_in`` takes a value's first place in the set."""
        if source not in self._built:
            of_source = pc.equal(self._source, source)
            self._built[source] = (
                self._ids.filter(of_source).combine_chunks(),
                self._persons.filter(of_source).combine_chunks(),
            )
        return self._built[source]

    def loose(self, sources: tuple[str, ...]) -> tuple[pa.Array, pa.Array]:
        """The ids of ``sources``' records without case, those that name one person only (grouped
        by DuckDB: 1.1 s for 3.6M CRM records, where pandas took 4.9 s and Arrow's own grouping
        11 s)."""
        if sources not in self._built:
            of_sources = pc.is_in(self._source, value_set=pa.array(sources, pa.large_string()))
            records = pa.table(
                {
                    "key": pc.utf8_upper(self._ids.filter(of_sources)),
                    "person": self._persons.filter(of_sources),
                }
            )
            with connect() as con:
                con.register("records", records)
                persons = con.sql(LOOSE_PERSONS_SQL).to_arrow_table()
            self._built[sources] = (
                persons["key"].combine_chunks(),
                persons["person"].combine_chunks(),
            )
        return self._built[sources]


def _looked_up(ids: pa.ChunkedArray, pairs: tuple[pa.Array, pa.Array]) -> pa.ChunkedArray:
    keys, persons = pairs
    return persons.take(pc.index_in(ids, value_set=keys, skip_nulls=True))


def to_persons(
    frame: pd.DataFrame, identity: pd.DataFrame | PersonLookup, sources: tuple[str, ...]
) -> pd.DataFrame:
    """``frame`` with each ``customer_id`` (a source id) replaced by its person's id: looked up
    among the identity's records of ``sources``, in that order; an id no record holds stays as it is
    (a customer of its own, counted unmatched if nothing else knows it). ``identity`` may be a
    ``PersonLookup`` made once for several frames. Arrow hash lookups throughout."""
    if frame.empty:  # a source absent this week: no lookup is built for it
        return frame.assign(customer_id=frame["customer_id"].astype("str"))
    lookup = identity if isinstance(identity, PersonLookup) else PersonLookup(identity)
    ids = arrow_text(frame["customer_id"].astype("str"))
    found = [_looked_up(ids, lookup.exact(source)) for source in sources]
    # Then without case, where that names one person only (``C1`` and ``c1`` of one source are two).
    found.append(_looked_up(pc.utf8_upper(ids), lookup.loose(sources)))
    person = pc.coalesce(*found, ids)
    return frame.assign(customer_id=pd.Series(person, index=frame.index, dtype="str"))


def events_per_person(events: pd.DataFrame, identity: pd.DataFrame | PersonLookup) -> pd.DataFrame:
    """The week's event aggregates per person: the counts of a person's ids summed (distinct
    features too: a feature used under two ids counts twice), the last event the latest."""
    mapped = to_persons(events, identity, ("database", "crm"))
    if not mapped["customer_id"].duplicated().any():
        return mapped
    out = (
        mapped.groupby("customer_id", sort=True)
        .agg(**{c: (c, "sum") for c in EVENT_SUMS}, last_event_at=("last_event_at", "max"))
        .reset_index()
    )
    return out[events.columns]


def transactions_per_person(
    transactions: pd.DataFrame, identity: pd.DataFrame | PersonLookup
) -> pd.DataFrame:
    """The week's ``transaction_aggregates`` per person (its database ids' rows combined)."""
    mapped = to_persons(transactions, identity, ("database",))
    merged = mapped["customer_id"].duplicated(keep=False).to_numpy()
    if not merged.any():
        return mapped
    parts = mapped[merged].assign(
        _spend_micro_usd=np.round(mapped.loc[merged, "week_spend_usd"] * 1_000_000)
    )
    combined = _combine(
        parts.assign(
            _country_rn=parts["country"].notna().cumsum().where(parts["country"].notna()),
            _segment_rn=parts["segment"].notna().cumsum().where(parts["segment"].notna()),
        )
    )
    combined["week_spend_usd"] = combined.pop("_spend_micro_usd") / 1_000_000
    out = pd.concat([mapped[~merged], combined], ignore_index=True)
    return out[TRANSACTION_AGGREGATE_COLUMNS].sort_values("customer_id", ignore_index=True)


@dataclass(frozen=True)
class PersonWeek:
    """The week's sources under their persons' ids: what ``build_profiles`` builds from."""

    records: pd.DataFrame  # the CRM's, the shop's and the ERP's records, a person's not yet one
    events: pd.DataFrame  # ``events_per_person``
    transactions: pd.DataFrame  # ``transactions_per_person``
    known_ids: pd.Series  # the persons the shop knows


def week_per_person(
    identity: pd.DataFrame,
    crm: pd.DataFrame,
    erp: pd.DataFrame,
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    known_customers: Callable[[list[str]], pd.DataFrame],
) -> PersonWeek:
    """Every source's id replaced by its person's: one profile per real customer, ERP-only ones
    included. ``transactions`` are the week's ``transaction_aggregates``; ``known_customers(ids)``
    gives the shop's records (source "database") of its customers among ``ids``, read for every
    person seen under each shop id they have. The lookups and the frames as the sources gave them
    are freed when this returns, before the build."""
    lookup = PersonLookup(identity)  # built once for the five frames mapped here
    crm_records = to_persons(crm, lookup, ("crm",))
    erp_records = to_persons(erp, lookup, ("erp",))
    mapped_events = events_per_person(events, lookup)
    per_person = transactions_per_person(transactions, lookup)
    persons = distinct_ids(
        crm_records["customer_id"],
        erp_records["customer_id"],
        mapped_events["customer_id"],
        per_person["customer_id"],
    )
    shop_ids = identity.loc[
        (identity["source"] == "database") & is_in(identity["customer_id"], persons),
        "source_customer_id",
    ]
    # The CRM's ids name shop customers, spelled loosely: looked up as written and upper-cased too.
    ids = distinct_ids(
        shop_ids,
        events["customer_id"],
        transactions["customer_id"],
        crm["customer_id"],
        crm["customer_id"].str.upper(),
        sort=True,
    )
    known = to_persons(known_customers(ids.to_pylist()), lookup, ("database",))
    records = pd.concat([crm_records, known, erp_records], ignore_index=True)
    return PersonWeek(records, mapped_events, per_person, known["customer_id"])
