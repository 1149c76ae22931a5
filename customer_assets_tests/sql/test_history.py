"""The carried history read in the warehouse: the transform gets the rows of the week's customers
only, in DuckDB and in BigQuery (emulator), typed as the history carries them."""

import uuid
from datetime import datetime, timezone

import pandas as pd
import pytest

from customer_assets.logic.history import carry, typed_history, week_totals
from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse
from customer_assets.resources.warehouse_sql import DuckDBWarehouse
from customer_assets.sql.history import week_customer_totals
from customer_assets_tests.support.sources import BIGQUERY_PROJECT

SCHEMA = "customer_analytics"
TABLE = [SCHEMA, "customer_history"]
WEEKS = [datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 9, tzinfo=timezone.utc)]


def rows(week: datetime, purchases: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """Validated rows: (customer, currency, amount, hour of the week)."""
    return pd.DataFrame(
        {
            "customer_id": [p[0] for p in purchases],
            "currency": [p[1] for p in purchases],
            "amount": [p[2] for p in purchases],
            "timestamp": [pd.Timestamp(week) + pd.Timedelta(hours=p[3]) for p in purchases],
        }
    )


def store(warehouse, history: pd.DataFrame) -> None:
    """The history's partitions as the warehouse IO manager stores them (timestamps UTC, the week
    naive)."""
    ts = "{DATETIME}" if isinstance(warehouse, DuckDBWarehouse) else "TIMESTAMP"
    table = warehouse.table(*TABLE)
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {{t}} (customer_id {{STR}}, currency {{STR}}, amount_milli "
        f"{{INT}}, transaction_count {{INT}}, first_purchase_at {ts}, last_purchase_at {ts}, "
        f"last_purchase_before_week {ts}, week_start {{DATETIME}})",
        t=table,
    )
    for row in history.itertuples(index=False):
        before = row.last_purchase_before_week
        warehouse.execute(
            "INSERT INTO {t} VALUES (@c, @cur, @a, @n, @first, @last, "
            + ("CAST(NULL AS " + ts + ")" if pd.isna(before) else "@before")
            + ", @week)",
            {
                "c": row.customer_id,
                "cur": row.currency,
                "a": int(row.amount_milli),
                "n": int(row.transaction_count),
                "first": _ts(warehouse, row.first_purchase_at),
                "last": _ts(warehouse, row.last_purchase_at),
                "before": None if pd.isna(before) else _ts(warehouse, before),
                "week": row.week_start.to_pydatetime(),
            },
            t=table,
        )


def _ts(warehouse, value: pd.Timestamp) -> datetime:
    value = value.to_pydatetime()
    return value.replace(tzinfo=None) if isinstance(warehouse, DuckDBWarehouse) else value


def test_the_transform_reads_the_week_customers_rows_of_every_currency_only(warehouse):
    first = carry(
        pd.DataFrame(),
        week_totals(rows(WEEKS[0], [("A", "USD", 10, 1), ("A", "EUR", 5, 2), ("B", "USD", 7, 3)])),
        WEEKS[0],
    )
    # the second week: A buys again in EUR only, C is new, B buys nothing
    second = carry(
        first, week_totals(rows(WEEKS[1], [("A", "EUR", 2.5, 4), ("C", "JPY", 300, 5)])), WEEKS[1]
    )
    store(warehouse, pd.concat([first, second], ignore_index=True))

    read = typed_history(week_customer_totals(warehouse, TABLE, WEEKS[1]))
    expected = second[second["customer_id"].isin(["A", "C"])].drop(columns="week_start")
    pd.testing.assert_frame_equal(
        read.sort_values(["customer_id", "currency"]).reset_index(drop=True),
        expected.sort_values(["customer_id", "currency"]).reset_index(drop=True),
    )
    # A's USD row comes too: the lifetime value sums every currency of a customer of the week
    assert read[read["customer_id"] == "A"]["currency"].tolist().count("USD") == 1
    assert "B" not in set(read["customer_id"])


def test_the_carry_over_files_equals_the_carry_of_frames(tmp_path):
    """DuckDB's carry from the week before's file (what the step runs, its memory not following the
    customers the history holds) gives ``logic.history.carry``'s rows, week after week, from
    nothing, from a file and from a frame (the opening balance), and counts the week's new
    customers."""
    import numpy as np

    from customer_assets.dagster_types import check_customer_history
    from customer_assets.frames import StoredFrame
    from customer_assets.sql.history import carry_to_file

    rng = np.random.default_rng(3)
    weeks = pd.date_range("2026-10-05", periods=5, freq="7D", tz="UTC")
    by_frames, before_file = pd.DataFrame(), None
    for i, start in enumerate(weeks):
        n = 0 if i == 2 else 300  # an empty week carries everything as it was
        week = week_totals(
            pd.DataFrame(
                {
                    "customer_id": rng.choice([f"C{j}" for j in range(80)], n),
                    "currency": rng.choice(["USD", "EUR", "KWD"], n),
                    "amount": np.round(rng.lognormal(3, 1.5, n), 3),
                    "timestamp": start + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s"),
                }
            )
        )
        expected = carry(by_frames, week, start.to_pydatetime())
        out = tmp_path / f"{i}.parquet"
        before = by_frames if i == 1 else before_file  # a frame once, as the opening balance is
        counts = carry_to_file(before, week, start.to_pydatetime(), out)
        stored = StoredFrame(out)
        got = pd.concat(list(stored.batches()), ignore_index=True)
        check_customer_history(got)
        got = typed_history(got).assign(week_start=got["week_start"].astype("datetime64[ns]"))
        got = got.sort_values(["customer_id", "currency"]).reset_index(drop=True)  # any order
        pd.testing.assert_frame_equal(got, expected.astype({"week_start": "datetime64[ns]"}))
        assert counts["rows"] == len(expected) and counts["duplicate_keys"] == 0
        assert counts["customers"] == expected["customer_id"].nunique()
        assert (
            counts["new_customers"]
            == expected.loc[expected["first_purchase_at"] >= start, "customer_id"].nunique()
        )
        by_frames, before_file = expected, out


def test_a_rescan_carries_the_opening_balance_and_the_loaded_weeks_summed_from_their_files(
    tmp_path,
):
    """The rescan's totals before the week are two files over disjoint periods (the opening balance,
    its timestamps naive UTC as the source's COPY gives them, and the loaded weeks', zoned as the
    warehouse gives them): the carry sums them per customer and currency, the first purchase the
    earlier and the last the later, and adds the week."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from customer_assets.frames import StoredFrame
    from customer_assets.sql.history import carry_to_file

    def totals(rows, tz):
        kind = pa.timestamp("us", tz=tz)
        return pa.table(
            {
                "customer_id": [r[0] for r in rows],
                "currency": [r[1] for r in rows],
                "amount_milli": pa.array([r[2] for r in rows], pa.int64()),
                "transaction_count": pa.array([r[3] for r in rows], pa.int64()),
                "first_purchase_at": pa.array([datetime.fromisoformat(r[4]) for r in rows], kind),
                "last_purchase_at": pa.array([datetime.fromisoformat(r[5]) for r in rows], kind),
            }
        )

    opening, loaded = tmp_path / "opening.parquet", tmp_path / "loaded.parquet"
    pq.write_table(
        totals(
            [
                ("A", "EUR", 10_000, 2, "2024-01-05 10:00", "2025-06-01 08:00"),
                ("B", "USD", 5_500, 1, "2025-02-02 00:00", "2025-02-02 00:00"),
            ],
            None,
        ),
        opening,
    )
    pq.write_table(
        totals(
            [
                ("A", "EUR", 2_250, 1, "2026-11-03 09:00", "2026-11-03 09:00"),
                ("C", "KWD", 1_125, 1, "2026-11-04 12:00", "2026-11-04 12:00"),
            ],
            "UTC",
        ),
        loaded,
    )
    week = week_totals(rows(WEEKS[1], [("A", "EUR", 1.0, 5)]))
    out = tmp_path / "carried.parquet"
    counts = carry_to_file([opening, loaded], week, WEEKS[1], out)
    got = StoredFrame(out).read().set_index(["customer_id", "currency"]).sort_index()
    assert got["amount_milli"].to_dict() == {
        ("A", "EUR"): 13_250,
        ("B", "USD"): 5_500,
        ("C", "KWD"): 1_125,
    }
    assert got["transaction_count"].to_dict() == {("A", "EUR"): 4, ("B", "USD"): 1, ("C", "KWD"): 1}
    a = got.loc[("A", "EUR")]
    assert a["first_purchase_at"] == pd.Timestamp("2024-01-05 10:00", tz="UTC")
    assert a["last_purchase_before_week"] == pd.Timestamp("2026-11-03 09:00", tz="UTC")
    assert a["last_purchase_at"] == pd.Timestamp(WEEKS[1]) + pd.Timedelta(hours=5)
    assert (counts["rows"], counts["customers"], counts["new_customers"]) == (3, 3, 0)
