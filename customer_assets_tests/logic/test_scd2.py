"""dim_customers maintained by SQL in the warehouse, one week at a time: DuckDB, and BigQuery (emulator)."""

import uuid
from datetime import datetime

import pandas as pd
import pytest

from customer_assets.logic.scd2 import DIMENSION_COLUMNS, OPEN_END, apply_week
from customer_assets.resources.warehouse_sql import BigQueryWarehouse, DuckDBWarehouse
from customer_assets_tests.support.sources import BIGQUERY_PROJECT

SCHEMA = "customer_analytics"
WEEKS = {
    "2026-11-02": {"A": ("smb", "Gold", "active"), "B": ("consumer", "Bronze", "active")},
    "2026-11-09": {"A": ("smb", "Gold", "at-risk"), "B": ("consumer", "Bronze", "active")},
    "2026-11-16": {"A": ("smb", "Gold", "at-risk"), "B": ("consumer", "Silver", "active"),
                   "C": ("smb", "Bronze", None)},
}


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request, tmp_path):
    if request.param == "duckdb":
        duck = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
        duck.execute(f"CREATE SCHEMA {SCHEMA}")
        return duck
    endpoint = request.getfixturevalue("bigquery_endpoint")
    client = request.getfixturevalue("bigquery_client")
    dataset = f"scd2_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    return BigQueryWarehouse(project=BIGQUERY_PROJECT, emulator_host=endpoint, dataset_override=dataset,
                             location="US")


def load_snapshot(warehouse, week: str, customers: dict) -> None:
    """Replace the week's snapshot rows, as the weekly_customer_profiles load does."""
    names = {"profiles": warehouse.table(SCHEMA, "weekly_customer_profiles")}
    warehouse.execute("CREATE TABLE IF NOT EXISTS {profiles} (customer_id {STR}, week_start {DATETIME}, "
                      "segment {STR}, value_tier {STR}, status {STR}, country {STR})", **names)
    start = datetime.fromisoformat(week)
    warehouse.execute("DELETE FROM {profiles} WHERE week_start = @week_start", {"week_start": start}, **names)
    for i, (customer, (segment, tier, status)) in enumerate(customers.items()):
        params = {"c": customer, "week_start": start, "s": segment, "t": tier, "country": "US"}
        status_sql = "@st" if status is not None else "CAST(NULL AS {STR})"
        if status is not None:
            params["st"] = status
        warehouse.execute("INSERT INTO {profiles} (customer_id, week_start, segment, value_tier, status, country) "
                          f"VALUES (@c, @week_start, @s, @t, {status_sql}, @country)", params, **names)


def dimension(warehouse) -> pd.DataFrame:
    rows = warehouse.query("SELECT * FROM {dim} ORDER BY customer_id, version",
                           dim=warehouse.table(SCHEMA, "dim_customers"))
    rows = rows[DIMENSION_COLUMNS].reset_index(drop=True)
    for column in ("effective_from", "effective_to"):
        rows[column] = pd.to_datetime(rows[column]).dt.tz_localize(None).astype("datetime64[us]")
    return rows.astype({"version": "int64", "is_current": "bool"})


def run(warehouse, order: list[str]) -> pd.DataFrame:
    for week in order:
        load_snapshot(warehouse, week, WEEKS[week])
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))
    return dimension(warehouse)


def test_versions_follow_changes(warehouse):
    dim = run(warehouse, list(WEEKS))
    a = dim[dim["customer_id"] == "A"].reset_index(drop=True)
    assert a["version"].tolist() == [1, 2] and a["is_current"].tolist() == [False, True]
    assert a.loc[0, "effective_to"] == a.loc[1, "effective_from"] == pd.Timestamp("2026-11-09")
    assert a.loc[1, "effective_to"] == pd.Timestamp(OPEN_END)
    b = dim[dim["customer_id"] == "B"]
    assert b["value_tier"].tolist() == ["Bronze", "Silver"]
    assert dim.groupby("customer_id")["is_current"].sum().eq(1).all() and len(dim) == 5
    assert dim.loc[dim["customer_id"] == "C", "status"].isna().all()  # a missing value is a value


def test_backfill_out_of_order_and_reruns_give_the_in_order_history(warehouse):
    weeks = list(WEEKS)
    in_order = run(warehouse, weeks)
    again = run(warehouse, [weeks[1], weeks[1], weeks[0], weeks[2]])
    pd.testing.assert_frame_equal(in_order, again)


def test_a_rerun_week_that_changed_replaces_its_versions(warehouse):
    weeks = list(WEEKS)
    run(warehouse, weeks)
    # The middle week is re-run after a late change: A never went at-risk that week.
    WEEKS_CHANGED = {**WEEKS[weeks[1]], "A": ("smb", "Gold", "active")}
    load_snapshot(warehouse, weeks[1], WEEKS_CHANGED)
    apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[1]))
    a = dimension(warehouse).query("customer_id == 'A'").reset_index(drop=True)
    assert a["status"].tolist() == ["active", "at-risk"]
    assert a["effective_from"].tolist() == [pd.Timestamp("2026-11-02"), pd.Timestamp("2026-11-16")]


def reference_dimension(snapshots: dict[str, dict]) -> pd.DataFrame:
    """The dimension by definition: per customer, a version wherever a tracked attribute changes."""
    rows = []
    for customer in sorted({c for week in snapshots.values() for c in week}):
        seen = [(week, snapshots[week][customer]) for week in sorted(snapshots) if customer in snapshots[week]]
        starts = [(week, state) for i, (week, state) in enumerate(seen) if i == 0 or state != seen[i - 1][1]]
        for n, (week, state) in enumerate(starts):
            end = starts[n + 1][0] if n + 1 < len(starts) else None
            rows.append({"customer_id": customer, "segment": state[0], "value_tier": state[1], "status": state[2],
                         "country": "US", "effective_from": pd.Timestamp(week),
                         "effective_to": pd.Timestamp(end) if end else pd.Timestamp(OPEN_END),
                         "is_current": end is None, "version": n + 1})
    frame = pd.DataFrame(rows)[DIMENSION_COLUMNS]
    for column in ("effective_from", "effective_to"):
        frame[column] = frame[column].astype("datetime64[us]")
    return frame


def test_any_order_of_weeks_and_reruns_gives_the_dimension_by_definition(tmp_path):
    """Random snapshots of 8 weeks applied in a random order, some weeks twice and some re-run with other
    content, end as the dimension computed from the final snapshots by definition."""
    import random

    rng = random.Random(11)
    warehouse = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    warehouse.execute(f"CREATE SCHEMA {SCHEMA}")
    weeks = [str((pd.Timestamp("2026-09-28") + pd.Timedelta(weeks=i)).date()) for i in range(8)]

    def random_week() -> dict:
        return {f"C{c}": (rng.choice(["smb", "consumer"]), rng.choice(["Gold", "Bronze"]),
                          rng.choice(["active", "at-risk", None]))
                for c in range(12) if rng.random() < 0.7}

    final = {}
    order = weeks + rng.sample(weeks, 5)
    rng.shuffle(order)
    for week in order:
        final[week] = random_week() if week not in final or rng.random() < 0.5 else final[week]
        load_snapshot(warehouse, week, final[week])
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))
    pd.testing.assert_frame_equal(dimension(warehouse), reference_dimension(final))
