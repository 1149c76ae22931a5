"""Which carried records a week's records can reach (``identity_links.reachable``), against a plain
graph search over random records: shared keyed hashes, persons, ids compared without case, the
ERP's ids in their own namespace, missing values that link nothing (hypothesis)."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from customer_assets.logic.identity_links import reachable

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "customer_assets_hypothesis")
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Few distinct values, so that records share them often; None is a missing value.
HASHES = st.sampled_from([None, None, "h1", "h2", "h3"])
IDS = st.sampled_from([None, "c1", "C1", "c2", "erp:C2", "x"])
RECORD = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["crm", "erp", "database"]),
        "source_customer_id": IDS,
        "email_hash": HASHES,
        "phone_hash": st.sampled_from([None, "p1", "p2"]),
        "customer_id": st.sampled_from([None, "P1", "P2", "P3"]),
        "start": st.booleans(),
    }
)


def _key(record: dict, column: str):
    value = record[column]
    if value is None:
        return None
    if column == "source_customer_id":  # without case; the ERP's ids apart
        return ("erp:" if record["source"] == "erp" else "") + value.upper()
    return value


def _reference(records: list[dict]) -> list[bool]:
    """Breadth-first from the start records over 'shares a non-missing key'."""
    columns = ("email_hash", "phone_hash", "customer_id", "source_customer_id")
    seen = [r["start"] for r in records]
    frontier = [i for i, r in enumerate(records) if r["start"]]
    while frontier:
        i = frontier.pop()
        for j, other in enumerate(records):
            if not seen[j] and any(
                _key(records[i], c) is not None and _key(records[i], c) == _key(other, c)
                for c in columns
            ):
                seen[j] = True
                frontier.append(j)
    return seen


@PROPERTY_SETTINGS
@given(records=st.lists(RECORD, max_size=12), as_objects=st.booleans())
def test_the_records_a_week_reaches_are_those_a_graph_search_finds(records, as_objects):
    frame = pd.DataFrame(
        records,
        columns=[
            "source",
            "source_customer_id",
            "email_hash",
            "phone_hash",
            "customer_id",
            "start",
        ],
    )
    # as the warehouse gives them (Arrow-backed text) or as Python objects (NaN for missing)
    for column in ("source", "source_customer_id", "email_hash", "phone_hash", "customer_id"):
        frame[column] = frame[column].astype(object if as_objects else "str")
    got = reachable(frame, frame["start"].to_numpy(dtype=bool))
    note(frame.to_string())
    assert isinstance(got, np.ndarray) and got.dtype == bool
    assert got.tolist() == _reference(records)
