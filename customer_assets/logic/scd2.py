"""A type-2 customer dimension derived from weekly profile snapshots, independent of load order."""

from __future__ import annotations

import pandas as pd

TRACKED = ["segment", "value_tier", "status", "country"]
# Microsecond precision: 9999-12-31 does not fit in nanoseconds (and warehouses store microseconds).
OPEN_END = pd.Timestamp("9999-12-31").as_unit("us")
# All the dimension reads of the weekly snapshots (the warehouse IO managers select only these).
SNAPSHOT_COLUMNS = ["customer_id", "week_start", *TRACKED]


def build_dimension(snapshots: pd.DataFrame) -> pd.DataFrame:
    """One row per version of each customer: a new version whenever a tracked attribute changes.

    A version is effective from the week it was first seen until the week the next version starts
    (``9999-12-31`` while current). Only the set of snapshots matters, never the order they were loaded
    in, so re-running a week adds nothing and a backfill gives the same history as running in order.
    """
    columns = ["customer_id", *TRACKED, "effective_from", "effective_to", "is_current", "version"]
    if snapshots.empty:
        return pd.DataFrame(columns=columns)
    weeks = (snapshots[SNAPSHOT_COLUMNS]
             .drop_duplicates(["customer_id", "week_start"], keep="last")
             .sort_values(["customer_id", "week_start"], kind="stable").reset_index(drop=True))
    state = weeks[TRACKED].astype("str").fillna("\0")  # a missing value equals a missing value
    same_customer = weeks["customer_id"].eq(weeks["customer_id"].shift())
    starts = ~same_customer | state.ne(state.shift()).any(axis=1)
    versions = weeks.loc[starts].copy()
    versions["version"] = versions.groupby("customer_id").cumcount() + 1
    versions = versions.rename(columns={"week_start": "effective_from"})
    versions["effective_from"] = versions["effective_from"].astype("datetime64[us]")
    next_start = versions.groupby("customer_id")["effective_from"].shift(-1)
    versions["is_current"] = next_start.isna()
    versions["effective_to"] = next_start.fillna(OPEN_END)
    versions["version"] = versions["version"].astype("int64")
    return versions[columns].reset_index(drop=True)
