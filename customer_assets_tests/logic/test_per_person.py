"""The profile step's per-person machinery against plain definitions: a source's id to its person
(``to_persons``), and one record per person (``deduplicate_records``) over what the step hands it,
a concatenation of the sources' records."""

import numpy as np
import pandas as pd
import pytest

from customer_assets.logic.per_person import (
    SOURCE_PRIORITY,
    PersonLookup,
    deduplicate_records,
    to_persons,
)

SOURCES = (("crm",), ("database",), ("erp",), ("database", "crm"))


def _person_reference(source_id, identity: pd.DataFrame, sources: tuple[str, ...]):
    """The definition, one id at a time: the first record of the first source holding the id as
    written; else the one person whose records of ``sources`` hold it without case; else the id."""
    if pd.isna(source_id):
        return source_id
    for source in sources:
        held = identity[
            (identity["source"] == source) & (identity["source_customer_id"] == source_id)
        ]
        if len(held):
            return held["customer_id"].iloc[0]
    loose = identity[
        identity["source"].isin(sources)
        & (identity["source_customer_id"].str.upper() == source_id.upper())
    ]
    persons = set(loose["customer_id"])
    return persons.pop() if len(persons) == 1 else source_id


@pytest.mark.parametrize("seed", range(10))
def test_to_persons_equals_its_definition_on_random_identities(seed):
    """Ids held twice by a source (its first record answers), ids equal but for case within and
    across sources, ids of no record, and missing ids; one lookup serving every frame."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 40))
    spellings = ["c1", "C1", "c2", "C2", "c3", "x", "X", None]
    identity = pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice(["P1", "P2", "P3", "P4"], n), dtype="str"),
            "source": pd.array(rng.choice(["crm", "database", "erp"], n), dtype="str"),
            "source_customer_id": pd.array(rng.choice(spellings, n), dtype="str"),
        }
    )
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice([*spellings, "zz"], int(rng.integers(0, 12)))),
        }
    ).astype({"customer_id": "str"})
    frame["value"] = np.arange(len(frame))
    lookup = PersonLookup(identity)
    for sources in SOURCES:
        expected = frame.assign(
            customer_id=pd.Series(
                [_person_reference(i, identity, sources) for i in frame["customer_id"]],
                index=frame.index,
                dtype="str",
            )
        )
        pd.testing.assert_frame_equal(to_persons(frame, lookup, sources), expected)


def _dedupe_reference(records: pd.DataFrame) -> pd.DataFrame:
    """The definition, in plain pandas: sort by id, by source (``SOURCE_PRIORITY``), latest update
    first, then take each column's first non-null value per id."""
    ranked = records.assign(_p=records["source"].map(SOURCE_PRIORITY).fillna(9))
    ranked = ranked.sort_values(
        ["customer_id", "_p", "updated_at"],
        ascending=[True, True, False],
        na_position="last",
        kind="stable",
    )
    return ranked.groupby("customer_id", sort=True).first().drop(columns="_p").reset_index()


def _records(rng, n: int) -> pd.DataFrame:
    def gaps(values):
        return pd.Series(values).mask(rng.random(n) < 0.3)

    return pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice(["C1", "C2", "C10", "c1", None], n), dtype="str"),
            "email_hash": gaps(pd.array(rng.choice(["a", "b", "c"], n), dtype="str")),
            "signup_date": gaps(
                pd.Timestamp("2026-01-01", tz="UTC")
                + pd.to_timedelta(rng.integers(0, 300, n), unit="D")
            ),
            "lifetime_value": gaps(rng.random(n)),
            "updated_at": gaps(
                pd.Timestamp("2026-11-16", tz="UTC")
                + pd.to_timedelta(rng.integers(0, 3, n), unit="D")
            ),
            "source": pd.array(rng.choice(["crm", "erp", "database", "other"], n), dtype="str"),
            "country": gaps(pd.array(rng.choice(["US", "DE"], n), dtype="str")),
        }
    )


@pytest.mark.parametrize("seed", range(12))
def test_dedup_of_a_concatenation_equals_its_definition(seed):
    """The step deduplicates the CRM's, the database's and the ERP's records concatenated: their
    columns arrive in several Arrow chunks."""
    rng = np.random.default_rng(seed)
    parts = [_records(rng, int(rng.integers(0, 60))) for _ in range(3)]
    records = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(deduplicate_records(records), _dedupe_reference(records))


def test_dedup_of_no_records_or_no_ids_is_empty_and_typed():
    rng = np.random.default_rng(0)
    for records in (_records(rng, 5).iloc[:0], _records(rng, 5).assign(customer_id=None)):
        records = records.astype({"customer_id": "str"})
        out = deduplicate_records(records)
        assert len(out) == 0 and list(out.columns) == list(records.columns)
        assert str(out["updated_at"].dtype) == "datetime64[ns, UTC]"
