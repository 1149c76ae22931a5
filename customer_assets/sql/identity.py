"""The carried identity where it lives: which records of the carried partition a week can change,
asked of the warehouse (one SQL text for DuckDB and BigQuery), so that only those pass through
pandas; the rest are copied inside the warehouse by the load (``CarriedWeek``).

A week's records reach a carried record through a shared keyed email or phone hash, an id compared
without case (an ERP id as ``erp:<id>``: a superset of the id links) or a person; what they reach
reaches further in the same way (``reached_records``: rounds of one query each, asking only for the
keys not asked before, until a round finds nothing new). It is the same spread as
``identity_links.reachable``, which carry_identity still runs over what is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from customer_assets.logic.identity import is_in
from customer_assets.resources.warehouse_sql import WarehouseSQL

_KEYS = {
    "emails": "e",
    "phones": "p",
    "persons": "c",
    "ids": "i",
}  # list -> its column in REACH_SQL
_ID_KEY = "CONCAT(CASE WHEN source = 'erp' THEN 'erp:' ELSE '' END, UPPER(source_customer_id))"
REACH_SQL = f"""
SELECT {{columns}} FROM {{table}}
WHERE week_start = @week AND (
  email_hash IN (SELECT e FROM {{emails}})
  OR phone_hash IN (SELECT p FROM {{phones}})
  OR customer_id IN (SELECT c FROM {{persons}})
  OR {_ID_KEY} IN (SELECT i FROM {{ids}})
)
"""
SIZE_SQL = (
    "SELECT COUNT(*) AS records, COUNT(DISTINCT customer_id) AS persons FROM {table} "
    "WHERE week_start = @week"
)
WHOLE_SQL = "SELECT * FROM {table} WHERE week_start = @week"
COLUMNS_SQL = "SELECT * FROM {table} WHERE week_start = @week LIMIT 0"
# The names persons hold that a new person's name could clash with: the name, or the name before a
# numbered suffix (``~2``), among the candidates.
NAMES_SQL = """
SELECT DISTINCT customer_id FROM {table}
WHERE week_start = @week AND (
  customer_id IN (SELECT n FROM {names})
  OR (STRPOS(customer_id, '~') > 0
      AND REGEXP_REPLACE(customer_id, '~[0-9]+$', '') IN (SELECT n FROM {names}))
)
"""
PERSONS_SQL = (
    "SELECT DISTINCT customer_id FROM {table} WHERE week_start = @week "
    "AND customer_id IN (SELECT p FROM {persons})"
)


@dataclass(frozen=True)
class CarriedPartition:
    """The identity partition a week carries: its table, week, and size (records, persons)."""

    table: str
    week: datetime
    records: int
    persons: int


def _unique(values: pd.Series) -> np.ndarray:
    values = values.dropna()
    return pd.unique(values.astype("str").to_numpy(dtype=object))


def record_keys(records: pd.DataFrame) -> dict[str, np.ndarray]:
    """The keys a set of identity records reach others by."""
    ids = records["source_customer_id"].astype("str").where(records["source_customer_id"].notna())
    upper = ids.str.upper()
    erp = (records["source"] == "erp").to_numpy(dtype=bool, na_value=False)
    return {
        "emails": _unique(records["email_hash"]),
        "phones": _unique(records["phone_hash"]),
        "persons": _unique(records["customer_id"])
        if "customer_id" in records
        else np.array([], dtype=object),
        "ids": _unique(upper.where(~erp, "erp:" + upper)),
    }


def _lists(warehouse: WarehouseSQL, todo: dict[str, np.ndarray]) -> Iterable[dict[str, list]]:
    """The keys to ask in the parts one statement takes (a part of each list at a time)."""
    parts = {k: list(warehouse.in_parts(v)) for k, v in todo.items()}
    for i in range(max(len(p) for p in parts.values())):
        yield {k: (list(p[i]) if i < len(p) else []) for k, p in parts.items()}


def size(warehouse: WarehouseSQL, table: str, week: datetime) -> CarriedPartition:
    row = warehouse.query(SIZE_SQL, {"week": week}, table=table).iloc[0]
    return CarriedPartition(table, week, int(row["records"]), int(row["persons"]))


def columns(warehouse: WarehouseSQL, table: str, week: datetime) -> list[str]:
    return list(warehouse.query(COLUMNS_SQL, {"week": week}, table=table).columns)


def whole(warehouse: WarehouseSQL, carried: CarriedPartition) -> pd.DataFrame:
    """Every record of the carried partition."""
    return warehouse.query(WHOLE_SQL, {"week": carried.week}, table=carried.table)


def _ids_held(
    warehouse: WarehouseSQL, carried: CarriedPartition, sql: str, name: str, values
) -> pd.Series:
    """The ``customer_id`` column of ``sql`` over the carried partition, its list parameter
    ``name`` (its column: the name's first letter) given ``values`` in the parts one statement
    takes."""
    found = [
        warehouse.query(
            sql,
            {"week": carried.week, name: list(part)},
            table=carried.table,
            **{name: warehouse.unnest(name, name[0])},
        )["customer_id"]
        for part in warehouse.in_parts(values)
    ]
    found = [f for f in found if len(f)]
    return (
        pd.concat(found, ignore_index=True).astype("str") if found else pd.Series([], dtype="str")
    )


def held_persons(warehouse: WarehouseSQL, carried: CarriedPartition, ids: list[str]) -> list[str]:
    """Which of the person ``ids`` the carried partition holds."""
    return sorted(set(_ids_held(warehouse, carried, PERSONS_SQL, "persons", ids)))


def reached_records(
    warehouse: WarehouseSQL,
    carried: CarriedPartition,
    start: pd.DataFrame,
    persons: Iterable[str],
    wanted: list[str],
) -> pd.DataFrame:
    """The carried records (``wanted`` columns) the ``start`` records (of the week) reach, directly or
    not, and those of the ``persons``; each key asked once."""
    asked = {k: np.array([], dtype=object) for k in _KEYS}
    todo = record_keys(start)
    todo["persons"] = pd.unique(
        np.concatenate([todo["persons"], np.asarray(list(persons), dtype=object)])
    )
    names = {
        "table": carried.table,
        "columns": ", ".join(wanted),
        **{k: warehouse.unnest(k, alias) for k, alias in _KEYS.items()},
    }
    found: list[pd.DataFrame] = []
    seen = pd.Index([], dtype=object)  # the records found, as one text each
    while True:
        todo = {
            k: v[~pd.Series(v, dtype=object).isin(asked[k]).to_numpy()] for k, v in todo.items()
        }
        if not any(len(v) for v in todo.values()):
            break
        asked = {k: np.concatenate([asked[k], todo[k]]) for k in _KEYS}
        rows = [
            warehouse.query(REACH_SQL, {"week": carried.week, **lists}, **names)
            for lists in _lists(warehouse, todo)
        ]
        rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=wanted)
        # a round finds again records found before (through keys asked now): only the new are kept
        record = rows["source"].astype("str") + "\x1f" + rows["source_customer_id"].astype("str")
        new = ~is_in(record, pd.Series(seen)) & ~record.duplicated().to_numpy()
        if not new.any():
            break
        rows = rows[new].reset_index(drop=True)
        seen = seen.append(pd.Index(record[new].to_numpy(dtype=object)))
        found.append(rows)
        todo = record_keys(rows)
    if not found:
        return pd.DataFrame(columns=wanted)
    return pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]


def names_in_use(
    warehouse: WarehouseSQL, carried: CarriedPartition, records: pd.DataFrame
) -> pd.Series:
    """The carried persons' names a new person named after one of ``records`` could clash with:
    any spelling of their ids (as given, upper-cased, as ``erp:<id>``), bare or numbered."""
    ids = records["source_customer_id"].dropna().astype("str")
    erp = (records.loc[ids.index, "source"] == "erp").to_numpy()
    spellings = pd.concat([ids, ids.str.upper()])
    prefixed = pd.concat([ids[erp], ids[erp].str.upper()])
    candidates = pd.unique(pd.concat([spellings, "erp:" + prefixed]).to_numpy(dtype=object))
    return _ids_held(warehouse, carried, NAMES_SQL, "names", candidates)
