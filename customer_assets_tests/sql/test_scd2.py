"""dim_customers maintained by SQL in the warehouse, one week at a time: DuckDB, and BigQuery
(emulator)."""

import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets.sql.scd2 import DIMENSION_COLUMNS, OPEN_END, apply_week
from customer_assets_tests.support.sources import BIGQUERY_PROJECT

SCHEMA = "customer_analytics"
WEEKS = {
    "2026-11-02": {"A": ("smb", "Gold", "active"), "B": ("consumer", "Bronze", "active")},
    "2026-11-09": {"A": ("smb", "Gold", "at-risk"), "B": ("consumer", "Bronze", "active")},
    "2026-11-16": {
        "A": ("smb", "Gold", "at-risk"),
        "B": ("consumer", "Silver", "active"),
        "C": ("smb", "Bronze", None),
    },
}


def load_snapshot(warehouse, week: str, customers: dict) -> None:
    """Replace the week's snapshot rows, as the weekly_customer_profiles load does."""
    names = {"profiles": warehouse.table(SCHEMA, "weekly_customer_profiles")}
    warehouse.execute(
        "CREATE TABLE IF NOT EXISTS {profiles} (customer_id {STR}, week_start {DATETIME}, "
        "segment {STR}, value_tier {STR}, status {STR}, country {STR})",
        **names,
    )
    start = datetime.fromisoformat(week)
    warehouse.execute(
        "DELETE FROM {profiles} WHERE week_start = @week_start", {"week_start": start}, **names
    )
    for _i, (customer, (segment, tier, status)) in enumerate(customers.items()):
        params = {"c": customer, "week_start": start, "s": segment, "t": tier, "country": "US"}
        status_sql = "@st" if status is not None else "CAST(NULL AS {STR})"
        if status is not None:
            params["st"] = status
        warehouse.execute(
            "INSERT INTO {profiles} (customer_id, week_start, segment, value_tier, status, country) "
            f"VALUES (@c, @week_start, @s, @t, {status_sql}, @country)",
            params,
            **names,
        )


def dimension(warehouse) -> pd.DataFrame:
    rows = warehouse.query(
        "SELECT * FROM {dim} ORDER BY customer_id, version",
        dim=warehouse.table(SCHEMA, "dim_customers"),
    )
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
        seen = [
            (week, snapshots[week][customer])
            for week in sorted(snapshots)
            if customer in snapshots[week]
        ]
        starts = [
            (week, state)
            for i, (week, state) in enumerate(seen)
            if i == 0 or state != seen[i - 1][1]
        ]
        for n, (week, state) in enumerate(starts):
            end = starts[n + 1][0] if n + 1 < len(starts) else None
            rows.append(
                {
                    "customer_id": customer,
                    "segment": state[0],
                    "value_tier": state[1],
                    "status": state[2],
                    "country": "US",
                    "effective_from": pd.Timestamp(week),
                    "effective_to": pd.Timestamp(end) if end else pd.Timestamp(OPEN_END),
                    "is_current": end is None,
                    "version": n + 1,
                }
            )
    frame = pd.DataFrame(rows)[DIMENSION_COLUMNS]
    for column in ("effective_from", "effective_to"):
        frame[column] = frame[column].astype("datetime64[us]")
    return frame


def test_any_order_of_weeks_and_reruns_gives_the_dimension_by_definition(tmp_path):
    """Random snapshots of 8 weeks applied in a random order, some weeks twice and some re-run with
    other content, end as the dimension computed from the final snapshots by definition."""
    import random

    rng = random.Random(11)
    warehouse = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    warehouse.execute(f"CREATE SCHEMA {SCHEMA}")
    weeks = [str((pd.Timestamp("2026-09-28") + pd.Timedelta(weeks=i)).date()) for i in range(8)]

    def random_week() -> dict:
        return {
            f"C{c}": (
                rng.choice(["smb", "consumer"]),
                rng.choice(["Gold", "Bronze"]),
                rng.choice(["active", "at-risk", None]),
            )
            for c in range(12)
            if rng.random() < 0.7
        }

    final = {}
    order = weeks + rng.sample(weeks, 5)
    rng.shuffle(order)
    for week in order:
        final[week] = random_week() if week not in final or rng.random() < 0.5 else final[week]
        load_snapshot(warehouse, week, final[week])
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))
    pd.testing.assert_frame_equal(dimension(warehouse), reference_dimension(final))


# ---- Facts of later weeks re-keyed when a backfill starts a version earlier (issue 24, item 3)
# ----------------


def create_facts(warehouse, facts: list[tuple[str, str, str]]) -> None:
    """A fact table of (transaction_id, customer_id, week) rows, each keyed to the version valid at
    its week now."""
    bigquery = isinstance(warehouse, BigQueryWarehouse)
    names = {
        "fact": warehouse.table(SCHEMA, "fact_transactions"),
        "dim": warehouse.table(SCHEMA, "dim_customers"),
        "ts": warehouse.quote("timestamp"),
    }
    warehouse.execute(
        "CREATE TABLE {fact} (transaction_id {STR}, customer_key {STR}, customer_id {STR}, {ts} "
        f"{'TIMESTAMP' if bigquery else 'TIMESTAMPTZ'}, week_start {{DATETIME}})",
        **names,
    )
    for transaction, customer, week in facts:
        start = datetime.fromisoformat(week)
        warehouse.execute(
            "INSERT INTO {fact} (transaction_id, customer_key, customer_id, {ts}, week_start) "
            "SELECT @t, customer_key, customer_id, @at, @week_start FROM {dim} "
            "WHERE customer_id = @c AND effective_from <= @week_start AND @week_start < effective_to",
            {
                "t": transaction,
                "c": customer,
                "week_start": start,
                "at": (start + timedelta(days=2, hours=3)).replace(tzinfo=timezone.utc),
            },
            **names,
        )


def fact_rows(warehouse) -> pd.DataFrame:
    """Each fact with its key and the key of the version valid at its week (None: no such
    version)."""
    return warehouse.query(
        """
        SELECT f.transaction_id, f.customer_key, d.customer_key AS valid_key, f.week_start
        FROM {fact} f LEFT JOIN {dim} d ON d.customer_id = f.customer_id
          AND d.effective_from <= f.week_start AND f.week_start < d.effective_to
        ORDER BY f.transaction_id""",
        fact=warehouse.table(SCHEMA, "fact_transactions"),
        dim=warehouse.table(SCHEMA, "dim_customers"),
    )


def test_a_backfill_rekeys_the_later_weeks_facts_once_and_the_newest_week_rekeys_nothing(warehouse):
    weeks = list(WEEKS)
    for week in weeks[1:]:
        load_snapshot(warehouse, week, WEEKS[week])
        # no fact table yet
        assert apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))["facts_rekeyed"] == 0
    create_facts(
        warehouse,
        [
            ("t1", "A", weeks[1]),
            ("t2", "A", weeks[2]),
            ("t3", "B", weeks[1]),
            ("t4", "B", weeks[2]),
            ("t5", "C", weeks[2]),
        ],
    )
    before = fact_rows(warehouse)
    assert before["customer_key"].tolist() == [
        "A|20261109",
        "A|20261109",
        "B|20261109",
        "B|20261116",
        "C|20261116",
    ]
    # The newest week again: no later facts, nothing re-keyed, nothing changed.
    assert apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[2]))["facts_rekeyed"] == 0
    pd.testing.assert_frame_equal(fact_rows(warehouse), before)

    # Week 1 backfilled with A and B as in week 2: their first versions now start on 11-02, so
    # re-keyed.
    load_snapshot(
        warehouse,
        weeks[0],
        {"A": ("smb", "Gold", "at-risk"), "B": ("consumer", "Bronze", "active")},
    )
    summary = apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[0]))
    after = fact_rows(warehouse)
    assert after["customer_key"].tolist() == [
        "A|20261102",
        "A|20261102",
        "B|20261102",
        "B|20261116",
        "C|20261116",
    ]
    assert (after["customer_key"] == after["valid_key"]).all()
    assert summary["facts_rekeyed"] == 3
    # Idempotent: the week again re-keys nothing and changes nothing.
    assert apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[0]))["facts_rekeyed"] == 0
    pd.testing.assert_frame_equal(fact_rows(warehouse), after)


def test_a_rerun_week_that_dropped_a_customer_rekeys_the_later_facts_to_the_surviving_version(
    warehouse,
):
    """A customer whose version started in the re-run week, absent from its new snapshot: the
    version of the later week falls back to the one before (a key the week's snapshot does not
    name)."""
    weeks = list(WEEKS)
    snapshots = {
        weeks[0]: {"A": ("smb", "Gold", "active")},
        weeks[1]: {"A": ("smb", "Gold", "at-risk")},
        weeks[2]: {"A": ("smb", "Gold", "active")},
    }
    for week in weeks:
        load_snapshot(warehouse, week, snapshots[week])
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))
    create_facts(warehouse, [("t1", "A", weeks[2])])
    assert fact_rows(warehouse)["customer_key"].tolist() == ["A|20261116"]
    load_snapshot(warehouse, weeks[1], {})
    assert apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[1]))["facts_rekeyed"] == 1
    rows = fact_rows(warehouse)
    assert rows["customer_key"].tolist() == rows["valid_key"].tolist() == ["A|20261102"]


def test_a_failing_rekey_rolls_the_merge_back_in_duckdb_and_rerunning_the_week_repairs_it(
    warehouse,
):
    """DuckDB: MERGE and re-key commit together, so when the re-key fails the dimension is as before
    the week. BigQuery runs them one after the other (the emulator cannot hold a MERGE in a
    transaction): the MERGE stays. On both, re-running the week re-keys the facts left behind."""
    weeks = list(WEEKS)
    for week in weeks[1:]:
        load_snapshot(warehouse, week, WEEKS[week])
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(week))
    before = dimension(warehouse)
    names = {
        "fact": warehouse.table(SCHEMA, "fact_transactions"),
        "ts": warehouse.quote("timestamp"),
    }
    ts = "TIMESTAMP" if isinstance(warehouse, BigQueryWarehouse) else "TIMESTAMPTZ"
    fact = {"at": datetime(2026, 11, 10, tzinfo=timezone.utc), "week_start": datetime(2026, 11, 9)}
    # A fact table whose customer_key cannot hold a key: the UPDATE fails after the MERGE ran.
    warehouse.execute(
        f"CREATE TABLE {{fact}} (customer_key {{INT}}, customer_id {{STR}}, {{ts}} {ts}, "
        "week_start {DATETIME})",
        **names,
    )
    warehouse.execute(
        "INSERT INTO {fact} (customer_key, customer_id, {ts}, week_start) VALUES "
        "(1, 'B', @at, @week_start)",
        fact,
        **names,
    )
    load_snapshot(warehouse, weeks[0], WEEKS[weeks[0]])
    # DuckDB and BigQuery raise their own error types: any failure of the week's statement will do
    with pytest.raises(Exception):  # noqa: B017
        apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[0]))
    if isinstance(warehouse, DuckDBWarehouse):
        pd.testing.assert_frame_equal(dimension(warehouse), before)
    # The table mended (B's fact of 11-09 with the key it had before the backfill), the week run
    # again.
    warehouse.execute("DROP TABLE {fact}", **names)
    warehouse.execute(
        f"CREATE TABLE {{fact}} (transaction_id {{STR}}, customer_key {{STR}}, customer_id {{STR}}, "
        f"{{ts}} {ts}, week_start {{DATETIME}})",
        **names,
    )
    warehouse.execute(
        "INSERT INTO {fact} (transaction_id, customer_key, customer_id, {ts}, week_start) VALUES "
        "('t1', 'B|20261109', 'B', @at, @week_start)",
        fact,
        **names,
    )
    assert apply_week(warehouse, SCHEMA, datetime.fromisoformat(weeks[0]))["facts_rekeyed"] == 1
    rows = fact_rows(warehouse)
    assert rows["customer_key"].tolist() == rows["valid_key"].tolist() == ["B|20261102"]


def plain_fact_keys(facts: list[tuple], customers: list[str], products: list[str]) -> dict:
    """``fact_keys``' figures by their definition, over the rows as Python values."""
    figures = {"facts_scanned": len(facts)}
    for at, kind, known in ((0, "customer", customers), (1, "product", products)):
        dangling = [row[at] for row in facts if row[at] not in known]
        figures[f"facts_with_dangling_{kind}_key"] = len(dangling)
        named = sorted({key for key in dangling if key is not None})
        figures[f"dangling_{kind}_keys"] = len(named)
        figures[f"example_{kind}_key"] = named[0] if named else None
    return figures


def test_fact_keys_counts_the_dangling_keys_of_every_week(warehouse):
    from customer_assets.sql.scd2 import fact_keys

    names = {
        name: warehouse.table(SCHEMA, name)
        for name in ("dim_customers", "dim_products", "fact_transactions")
    }
    nothing = plain_fact_keys([], [], [])
    assert fact_keys(warehouse, SCHEMA) == nothing  # no fact table yet
    warehouse.execute("CREATE TABLE {dim_customers} (customer_key {STR})", **names)
    warehouse.execute("CREATE TABLE {dim_products} (product_key {STR})", **names)
    warehouse.execute(
        "CREATE TABLE {fact_transactions} (customer_key {STR}, product_key {STR})", **names
    )
    assert fact_keys(warehouse, SCHEMA) == nothing  # an empty one
    customers, products = ["A|20261102", "B|20261102", "B|20261102"], ["P|20261102"]
    facts = [
        ("A|20261102", "P|20261102"),
        ("A|20261109", "P|20261102"),
        ("A|20261109", "P|20261109"),
        ("B|20261102", "P|20261102"),
        ("C|20261109", "P|20261116"),
        (None, "P|20261102"),  # a fact without a key points nowhere too
    ]
    for table, rows in (
        ("dim_customers", [f"('{key}')" for key in customers]),
        ("dim_products", [f"('{key}')" for key in products]),
        (
            "fact_transactions",
            [
                "(" + ", ".join("CAST(NULL AS {STR})" if k is None else f"'{k}'" for k in row) + ")"
                for row in facts
            ],
        ),
    ):
        warehouse.execute(f"INSERT INTO {{{table}}} VALUES {', '.join(rows)}", **names)
    expected = plain_fact_keys(facts, customers, products)
    assert expected == {
        "facts_scanned": 6,
        "facts_with_dangling_customer_key": 4,
        "dangling_customer_keys": 2,
        "example_customer_key": "A|20261109",
        "facts_with_dangling_product_key": 2,
        "dangling_product_keys": 2,
        "example_product_key": "P|20261109",
    }
    assert fact_keys(warehouse, SCHEMA) == expected


def test_a_merge_that_lost_a_race_with_another_week_is_run_again(request, monkeypatch):
    """BigQuery fails a MERGE that raced another update of the same table ("Could not serialize
    access ... due to concurrent update"; it changed nothing): the statement runs again, and the
    dimension equals the one built without the race."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    monkeypatch.setattr("customer_assets.resources.bigquery_client.CONFLICT_BASE_SECONDS", 0.1)
    endpoint = request.getfixturevalue("bigquery_endpoint")
    client = request.getfixturevalue("bigquery_client")
    warehouses = []
    for _ in range(2):
        dataset = f"scd2_{uuid.uuid4().hex[:8]}"
        client.create_dataset(dataset)
        warehouses.append(
            BigQueryWarehouse(
                project=BIGQUERY_PROJECT, emulator_host=endpoint, dataset_override=dataset
            )
        )
    calm = run(warehouses[0], list(WEEKS))

    original, raced = bigquery.Client.query, []

    def racing(self, sql, *args, **kwargs):
        if "MERGE" in sql.upper() and len(raced) < 2:
            raced.append(sql)
            raise gexc.BadRequest(
                "Could not serialize access to table p:d.dim_customers due to concurrent update",
                errors=[{"reason": "invalidQuery", "message": "due to concurrent update"}],
            )
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", racing)
    pd.testing.assert_frame_equal(run(warehouses[1], list(WEEKS)), calm)
    assert len(raced) == 2


def test_a_statement_failing_otherwise_is_not_run_again(request, monkeypatch):
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    endpoint = request.getfixturevalue("bigquery_endpoint")
    calls = []

    def broken(self, sql, *args, **kwargs):
        calls.append(sql)
        raise gexc.BadRequest("Syntax error: Unexpected keyword MERGE")

    monkeypatch.setattr(bigquery.Client, "query", broken)
    warehouse = BigQueryWarehouse(project=BIGQUERY_PROJECT, emulator_host=endpoint)
    with pytest.raises(gexc.BadRequest, match="Syntax error"):
        warehouse.execute("SELECT 1")
    assert len(calls) == 1
