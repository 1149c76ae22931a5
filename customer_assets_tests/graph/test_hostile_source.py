"""Issue 21, items 3, 4, 5, 7, 10 and 11, against a real PostgreSQL: ids that differ only by case,
padded ids, a customers table without a primary key holding duplicates, status spellings, amounts
too small to convert and a product name over 1 MiB, all in one source whose week runs the extract
and validation once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from customer_assets_tests.support.pipeline import run_week
from customer_assets_tests.support.sources import SMALL, create_source, query, socket_dir

WEEK = "2026-11-16"
DUPLICATED_CUSTOMERS = (
    3  # customers whose row the source holds twice (a third copy for one of them)
)


def _week_rows(dsn: str, n: int) -> list[tuple[str, str, str]]:
    """``n`` clean USD rows of the week: (transaction_id, customer_id, product_id), all different
    customers."""
    return query(
        dsn,
        """
        SELECT DISTINCT ON (customer_id) transaction_id, customer_id, product_id FROM transactions
        WHERE status = 'completed' AND "timestamp" >= %s::date AND "timestamp" < %s::date + 7 AND currency = 'USD'
          AND amount > 1 AND customer_id IN (SELECT customer_id FROM customers) AND transaction_id NOT IN
              (SELECT transaction_id FROM demo_seed_dirty_rows WHERE transaction_id IS NOT NULL)
          AND product_id IN (SELECT product_id FROM products)
        ORDER BY customer_id DESC, transaction_id LIMIT %s""",
        (WEEK, WEEK, n),
    )


def _copy(dsn: str, template: str, new_id: str, **changes: str) -> None:
    """A transaction like ``template``, with ``changes`` as SQL expressions over its columns."""
    columns = ["customer_id", "product_id", "amount", "currency", '"timestamp"', "status"]
    exprs = ", ".join(changes.get(c.strip('"'), c) for c in columns)
    query(
        dsn,
        f"INSERT INTO transactions (transaction_id, {', '.join(columns)}) "
        f"SELECT %s, {exprs} FROM transactions WHERE transaction_id = %s RETURNING 1",
        (new_id, template),
    )


@pytest.fixture(scope="module")
def hostile(pg_server, tmp_path_factory):
    """The small source made hostile, and one run of its week's extract and validation
    (intermediates kept)."""
    dsn = create_source(pg_server, "hostile_source", SMALL)
    rows = _week_rows(dsn, 12)
    (case_t, case_c, _), (pad_t, pad_c, pad_p), *duplicated = rows[: 2 + DUPLICATED_CUSTOMERS]
    status_t, dust_t, giant_t = (
        r[0] for r in rows[2 + DUPLICATED_CUSTOMERS : 5 + DUPLICATED_CUSTOMERS]
    )
    # A table without a primary key (as many sources are); amounts as float8, which holds 5e-324.
    query(
        dsn,
        "ALTER TABLE customers DROP CONSTRAINT customers_pkey; "
        "ALTER TABLE transactions ALTER COLUMN amount TYPE float8; SELECT 1",
    )
    # Item 3: the lower-case twin of a customer with a transaction this week, another person
    # entirely.
    twin = case_c.lower()
    query(
        dsn,
        "INSERT INTO customers (customer_id, created_at, country, segment) "
        "VALUES (%s, '2024-03-01', 'ZZ', 'twin-segment') RETURNING 1",
        (twin,),
    )
    _copy(dsn, case_t, "CASE-TWIN", customer_id=f"'{twin}'")
    # Item 4: a padded customer id and a padded product id.
    _copy(dsn, pad_t, "PADDED-CUSTOMER", customer_id=f"'{pad_c} '")
    _copy(dsn, pad_t, "PADDED-PRODUCT", product_id=f"' {pad_p}'")
    # Item 5: whole rows of customers held twice; for one, a third row created later with another
    # segment.
    duplicated_ids = [c for _, c, _ in duplicated]
    query(
        dsn,
        "INSERT INTO customers SELECT * FROM customers WHERE customer_id = ANY(%s) RETURNING 1",
        (duplicated_ids,),
    )
    query(
        dsn,
        "INSERT INTO customers (customer_id, created_at, country, segment) SELECT customer_id, "
        "created_at + interval '1 day', country, 'latest-segment' FROM customers WHERE customer_id = %s "
        "LIMIT 1 RETURNING 1",
        (duplicated_ids[0],),
    )
    # Item 7: completed, spelt otherwise.
    _copy(dsn, status_t, "STATUS-CAPITAL", status="'Completed'")
    _copy(dsn, status_t, "STATUS-PADDED", status="'completed '")
    # Item 10: dust.
    _copy(dsn, dust_t, "DUST-1", amount="0.0000000001")
    _copy(dsn, dust_t, "DUST-2", amount="'5e-324'::float8")
    # Item 11: a product name of 1.1 M characters (2.2 MB in UTF-8).
    query(
        dsn,
        "INSERT INTO products (product_id, name, category, price) "
        "VALUES ('P-GIANT', repeat('é', 1100000), 'Office', 9.5) RETURNING 1",
    )
    _copy(dsn, giant_t, "GIANT-NAME", product_id="'P-GIANT'")

    tmp = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as env:
        _use_hostile_source(env, pg_server, tmp)
        result = run_week(
            WEEK,
            selection=dg.AssetSelection.groups("extract", "quality"),
            raise_on_error=False,
            keep_intermediates_in=tmp / "kept",
        )
    return {
        "dsn": dsn,
        "tmp": tmp,
        "result": result,
        "case": (case_t, case_c, twin),
        "padded": (pad_c, pad_p),
        "duplicated": duplicated_ids,
        "server": pg_server,
    }


def _use_hostile_source(env: pytest.MonkeyPatch, pg_server, tmp: Path) -> None:
    for name, value in {
        "DB_HOST": socket_dir(pg_server),
        "DB_USER": "postgres",
        "DB_NAME": "hostile_source",
        "DATA_DIR": str(tmp / "data"),
        "WAREHOUSE_DUCKDB_PATH": str(tmp / "warehouse.duckdb"),
        "ETL_LOG_DIR": str(tmp / "logs" / "etl"),
        "DAGSTER_DEPLOYMENT": "local",
        "PII_HASH_KEY": "test-hash-key",
    }.items():
        env.setenv(name, value)
    for name in [
        n for n in os.environ if n.startswith(("CRM_", "ERP_DB_", "DB_READ", "DB_PORT", "EVENT"))
    ] + ["REPORTS_DIR", "SOURCE_TIMEZONE", "PIPELINE_FIRST_WEEK"]:
        env.delenv(name, raising=False)


def _kept(hostile, asset: str) -> pd.DataFrame:
    return pd.read_parquet(Path(hostile["tmp"], "kept", "etl", asset, f"{WEEK}.parquet")).set_index(
        "transaction_id"
    )


def _raw_metadata(hostile) -> dict:
    events = hostile["result"].asset_materializations_for_node("etl__raw_transactions")
    assert events, "the extract did not materialize"
    return {k: v.value for k, v in events[0].metadata.items()}


def _report(hostile) -> dict:
    return json.loads(
        (Path(hostile["tmp"], "data", "reports", WEEK, "quality_report.json")).read_text()
    )


def test_the_hostile_week_extracts_and_validates(hostile):
    """Items 10 and 11: no step fails (an amount too small to convert failed validation with a
    pandera error; a value over 1 MiB failed the extract with ArrowInvalid "straddling object")."""
    result = hostile["result"]
    failures = [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert result.success, failures


def test_ids_differing_only_by_case_stay_two_customers_and_are_reported(hostile):
    """Item 3: ``C…`` and ``c…`` are two customers of one source, each joined to its own row."""
    case_t, case_c, twin = hostile["case"]
    validated = _kept(hostile, "validated_transactions")
    assert validated.loc["CASE-TWIN", ["customer_id", "country", "segment"]].tolist() == [
        twin,
        "ZZ",
        "twin-segment",
    ]
    assert (
        validated.loc[case_t, "customer_id"] == case_c and validated.loc[case_t, "country"] != "ZZ"
    )
    assert _raw_metadata(hostile)["id_collisions"] == 1
    assert _report(hostile)["source_findings"]["ID_COLLISION"] == 1


def test_ids_differing_only_by_case_are_two_profiles_two_dimension_rows_and_are_erased_apart(
    hostile, tmp_path, monkeypatch
):
    """Item 3, past the extract: ``C…`` (its own country) and ``c…`` (ZZ, twin-segment) gave one
    profile and one dim_customers row with the second one's attributes, and erasing either erased
    both."""
    from customer_assets.definitions import build_definitions
    from customer_assets_tests.support.pipeline import warehouse

    case_t, case_c, twin = hostile["case"]
    _use_hostile_source(monkeypatch, hostile["server"], tmp_path)
    result = run_week(WEEK, raise_on_error=False)
    failures = [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert result.asset_materializations_for_node("customer_analytics__fact_transactions"), failures
    db = tmp_path / "warehouse.duckdb"
    profiles = warehouse(db, "SELECT * FROM customer_analytics.weekly_customer_profiles").set_index(
        "customer_id"
    )
    assert profiles.loc[twin, ["country", "segment"]].tolist() == ["ZZ", "twin-segment"]
    assert (
        profiles.loc[case_c, "country"] != "ZZ"
        and profiles.loc[case_c, "segment"] != "twin-segment"
    )
    assert profiles.loc[[twin, case_c], "week_transaction_count"].tolist() == [1, 1]
    current = warehouse(
        db, "SELECT * FROM customer_analytics.dim_customers WHERE is_current"
    ).set_index("customer_id")
    assert current.loc[twin, "country"] == "ZZ" and current.loc[case_c, "country"] != "ZZ"
    identity = warehouse(db, "SELECT * FROM customer_analytics.customer_identity_map")
    assert set(
        identity.loc[identity["source_customer_id"].isin([twin, case_c]), "customer_id"]
    ) == {twin, case_c}

    ids = tmp_path / "ids.txt"
    ids.write_text(f"{twin}\n")
    job = build_definitions("local").get_job_def("erase_customers")
    assert job.execute_in_process(
        run_config={
            "ops": {"erase_customers_op": {"config": {"ids_file": str(ids), "request": "DSR-case"}}}
        }
    ).success
    left = warehouse(db, "SELECT customer_id FROM customer_analytics.weekly_customer_profiles")[
        "customer_id"
    ]
    assert twin not in set(left) and case_c in set(left)
    facts = warehouse(db, "SELECT customer_id FROM customer_analytics.fact_transactions")[
        "customer_id"
    ]
    assert twin not in set(facts) and case_c in set(facts)


def test_padded_ids_join_their_customer_and_product(hostile):
    """Item 4: ``'C0000150 '`` was quarantined UNKNOWN_CUSTOMER because the extract trimmed after
    the join."""
    pad_c, pad_p = hostile["padded"]
    validated = _kept(hostile, "validated_transactions")
    assert validated.loc["PADDED-CUSTOMER", "customer_id"] == pad_c
    assert validated.loc["PADDED-PRODUCT", "product_id"] == pad_p
    assert validated.loc[["PADDED-CUSTOMER", "PADDED-PRODUCT"], "country"].notna().all()
    assert (
        validated.loc["PADDED-PRODUCT", "product_name"]
        == validated.loc["PADDED-CUSTOMER", "product_name"]
    )


def test_duplicate_customer_rows_multiply_nothing_and_blame_the_customers_table(hostile):
    """Item 5: each transaction of a customer held twice came out twice (quarantined
    DUPLICATE_TRANSACTION_ID)."""
    dsn = hostile["dsn"]
    raw = _kept(hostile, "raw_transactions")
    completed, distinct = query(
        dsn,
        """SELECT count(*), count(DISTINCT transaction_id) FROM transactions
        WHERE lower(trim(status)) = 'completed' AND "timestamp" >= %s::date AND "timestamp" < %s::date + 7""",
        (WEEK, WEEK),
    )[0]
    assert len(raw) == completed  # one row per transaction (the seed's own duplicate ids included)
    mine = raw[raw["customer_id"].isin(hostile["duplicated"])]
    assert len(mine) > 0 and mine.index.is_unique
    # The pick: the latest created_at (the third row, with its own segment), whatever the physical
    # order.
    assert set(mine.loc[mine["customer_id"] == hostile["duplicated"][0], "segment"]) == {
        "latest-segment"
    }
    assert (
        _report(hostile)["quarantine_reasons"].get("DUPLICATE_TRANSACTION_ID", 0)
        <= completed - distinct
    )
    extra = DUPLICATED_CUSTOMERS + 1  # rows beyond one per customer
    assert _raw_metadata(hostile)["duplicate_customer_records"] == extra
    assert _report(hostile)["source_findings"]["DUPLICATE_CUSTOMER_RECORD"] == extra


def test_completed_in_any_case_or_padding_is_read_and_other_statuses_are_counted(hostile):
    """Item 7: ``'Completed'`` and ``'completed '`` rows vanished without a count."""
    validated = _kept(hostile, "validated_transactions")
    assert {"STATUS-CAPITAL", "STATUS-PADDED"} <= set(validated.index)
    expected = dict(
        query(
            hostile["dsn"],
            """SELECT status, count(*) FROM transactions
        WHERE "timestamp" >= %s::date AND "timestamp" < %s::date + 7 AND lower(trim(status)) <> 'completed'
        GROUP BY status""",
            (WEEK, WEEK),
        )
    )
    metadata = _raw_metadata(hostile)
    assert metadata["excluded_statuses"] == expected and len(expected) == 3
    assert metadata["excluded_rows"] == sum(expected.values())
    assert _report(hostile)["source_findings"]["excluded_statuses"] == expected
    # The week's version describes the rows read.
    assert int(metadata["source_version"].split(":")[0]) == metadata["dagster/row_count"]


def test_amounts_below_the_minor_unit_are_quarantined(hostile):
    """Item 10: ``0.0000000001`` USD and ``5e-324`` passed every rule and failed the week in a
    pandera check."""
    quarantined = _kept(hostile, "quarantined_transactions")
    assert (
        quarantined.loc[["DUST-1", "DUST-2"], "primary_reason"].tolist() == ["BELOW_MINOR_UNIT"] * 2
    )


def test_a_product_name_over_a_mebibyte_is_read_whole(hostile):
    """Item 11: the extract failed with ``ArrowInvalid: straddling object straddles two block
    boundaries``."""
    validated = _kept(hostile, "validated_transactions")
    assert validated.loc["GIANT-NAME", "product_name"] == "é" * 1_100_000
