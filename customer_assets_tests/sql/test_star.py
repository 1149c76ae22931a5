"""The week's facts resolved in the warehouse, DuckDB and BigQuery (emulator): a transaction whose
keys each match one dimension row is a fact; none or several quarantine it with its reasons, each
transaction once, and an empty week gives two empty files typed as the models."""

from datetime import datetime

import pandas as pd

from customer_assets import tables
from customer_assets.dagster_types import (
    check_fact_transactions,
    check_fact_transactions_quarantine,
)
from customer_assets.frames import StoredFrame
from customer_assets.logic import checks
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets.schemas import FactTransactions, FactTransactionsQuarantine
from customer_assets.sql.star import resolve_week
from customer_assets.weeks import WeekContext

SCHEMA = "customer_analytics"
WEEK = WeekContext.of("2026-11-16")
MONDAY = datetime(2026, 11, 16)


def _create(warehouse, table: str, columns: str, rows: list[str]) -> None:
    name = warehouse.table(SCHEMA, table)
    warehouse.execute(f"CREATE TABLE {{t}} ({columns})", t=name)
    for values in rows:
        warehouse.execute(f"INSERT INTO {{t}} VALUES ({values})", {"monday": MONDAY}, t=name)


def seed(warehouse, transactions: list[tuple[str, str, str]]) -> None:
    """The star's inputs: customers C1 (one version) and C2 (two overlapping versions), product P1,
    the person of each shop id, the week's Tuesday in the calendar, and ``transactions`` (id, shop
    customer id, product id), each on that Tuesday unless its id ends in 'X' (a day outside the
    calendar)."""
    ts = "TIMESTAMP" if not isinstance(warehouse, DuckDBWarehouse) else "TIMESTAMPTZ"
    _create(
        warehouse,
        tables.DIM_CUSTOMERS,
        "customer_key {STR}, customer_id {STR}, effective_from {DATETIME}, effective_to {DATETIME}",
        [
            "'C1|20261116', 'C1', @monday, CAST('9999-12-31 00:00:00' AS {DATETIME})",
            "'C2|20261109', 'C2', CAST('2026-11-09 00:00:00' AS {DATETIME}), CAST('9999-12-31 00:00:00' AS {DATETIME})",
            "'C2|20261116', 'C2', @monday, CAST('9999-12-31 00:00:00' AS {DATETIME})",
        ],
    )
    _create(
        warehouse,
        tables.DIM_PRODUCTS,
        "product_key {STR}, product_id {STR}, effective_from {DATETIME}, effective_to {DATETIME}",
        ["'P1|20261116', 'P1', @monday, CAST('9999-12-31 00:00:00' AS {DATETIME})"],
    )
    _create(warehouse, tables.DIM_DATE, "date_key {INT}", ["20261117"])
    _create(
        warehouse,
        tables.CUSTOMER_IDENTITY_MAP,
        "week_start {DATETIME}, source {STR}, source_customer_id {STR}, customer_id {STR}",
        ["@monday, 'database', 'c1', 'C1'", "@monday, 'database', 'c2', 'C2'"],
    )
    _create(
        warehouse,
        tables.WEEKLY_TRANSACTIONS,
        f"transaction_id {{STR}}, customer_id {{STR}}, product_id {{STR}}, {warehouse.quote('timestamp')} "
        f"{ts}, week_start {{DATETIME}}, amount {{FLOAT}}, currency {{STR}}, amount_usd {{FLOAT}}, "
        "fx_rate {FLOAT}, fx_rate_date {DATETIME}, is_anomaly {BOOL}, anomaly_flags {STR}",
        [
            f"'{tid}', '{customer}', '{product}', {ts} "
            f"'{'2026-11-21' if tid.endswith('X') else '2026-11-17'} 10:00:00+00', @monday, 12.5, "
            "'EUR', 14.0, 1.12, CAST('2026-11-16 00:00:00' AS {DATETIME}), FALSE, ''"
            for tid, customer, product in transactions
        ],
    )


def resolved(warehouse, tmp_path) -> tuple[int, StoredFrame, StoredFrame]:
    files = [tmp_path / f"2026-11-16.{kind}.parquet" for kind in ("facts", "quarantine")]
    loaded = resolve_week(warehouse, SCHEMA, WEEK, *files)
    facts, quarantined = StoredFrame(files[0]), StoredFrame(files[1])
    for stored, check in (
        (facts, check_fact_transactions),
        (quarantined, check_fact_transactions_quarantine),
    ):
        for batch in stored.batches():
            check(batch)  # each typed as its model
    return loaded, facts, quarantined


def test_each_transaction_is_a_fact_or_quarantined_once_with_its_reasons(warehouse, tmp_path):
    seed(
        warehouse,
        [
            ("T1", " c1 ", "P1"),  # resolves (the shop id trimmed)
            ("T2", "c1", "P9"),  # no product version
            ("T3", "c9", "P1"),  # no person, so no customer version
            ("T4", "c2", "P1"),  # two customer versions valid in the week
            ("T5X", "c9", "P9"),  # no customer, no product, no day
        ],
    )
    loaded, facts, quarantined = resolved(warehouse, tmp_path)
    fact_rows = facts.read()
    assert loaded == 5
    assert fact_rows["transaction_id"].tolist() == ["T1"]
    assert fact_rows.iloc[0][
        ["customer_key", "product_key", "date_key", "customer_id"]
    ].tolist() == [
        "C1|20261116",
        "P1|20261116",
        20261117,
        "C1",
    ]
    reasons = dict(quarantined.read(["transaction_id", "reason_codes"]).itertuples(index=False))
    assert reasons == {
        "T2": "NO_PRODUCT_VERSION",
        "T3": "NO_CUSTOMER_VERSION",
        "T4": "AMBIGUOUS_CUSTOMER_VERSION",
        "T5X": "NO_CUSTOMER_VERSION;NO_PRODUCT_VERSION;NO_DATE",
    }
    assert quarantined.read(["customer_id"])["customer_id"].tolist().count("c9") == 2
    outcome = checks.keys_resolve(loaded, len(facts), {"NO_PRODUCT_VERSION": 1})
    assert not outcome.passed and "4 quarantined" in outcome.description


def test_an_empty_week_gives_two_empty_files_typed_as_the_models(warehouse, tmp_path):
    seed(warehouse, [])
    loaded, facts, quarantined = resolved(warehouse, tmp_path)
    assert (loaded, len(facts), len(quarantined)) == (0, 0, 0)
    assert facts.columns == list(FactTransactions.to_schema().columns)
    assert quarantined.columns == list(FactTransactionsQuarantine.to_schema().columns)
    assert pd.api.types.is_datetime64_any_dtype(facts.empty()["timestamp"])
