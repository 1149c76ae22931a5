"""Issue 22, item 1: a suppression list that outlives the key. A run under another key, or with the
local key lost, stops before extracting; the README's key rotation (the job ``rekey_suppression``)
moves the list."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from customer_assets_tests.support.pipeline import run_week, warehouse

WEEK = "2026-11-16"
README = Path(__file__).parents[1] / "README.md"


def erase(
    customer: str,
    tmp: Path,
    deployment: str = "local",
    request: str = "DSR-22",
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """The erasure job as an operator runs it: the ids in a file, never in the run config."""
    from customer_assets.definitions import build_definitions

    ids = tmp / "erasure_ids.txt"
    ids.write_text(f"{customer}\n")
    job = build_definitions(deployment).get_job_def("erase_customers")
    result = job.execute_in_process(
        instance=instance,
        run_config={
            "ops": {"erase_customers_op": {"config": {"ids_file": str(ids), "request": request}}}
        },
    )
    ids.unlink()
    return result


def customer_tables(path) -> list[tuple[str, str]]:
    """Every warehouse table with a customer column, found in the warehouse (not from a list kept by
    hand)."""
    found = warehouse(
        path,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "'customer_analytics' AND column_name IN ('customer_id', 'source_customer_id', 'retired_id', 'surviving_id')",
    )
    return sorted(found.itertuples(index=False, name=None))


def rows_of(path, customer: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table, column in customer_tables(path):
        n = int(
            warehouse(
                path,
                f"SELECT count(*) AS n FROM customer_analytics.{table} "
                f"WHERE upper(trim({column})) = '{customer}'",
            )["n"][0]
        )
        counts[table] = counts.get(table, 0) + n
    return counts


def busiest_customer(path) -> str:
    """The week's busiest customer (the seeded bot): in every customer table."""
    return warehouse(
        path,
        "SELECT customer_id FROM customer_analytics.fact_transactions GROUP BY 1 "
        "ORDER BY count(*) DESC, 1 LIMIT 1",
    )["customer_id"][0]


def _stopped_before_extracting(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    assert not result.asset_materializations_for_node("etl__raw_transactions")
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "etl__raw_transactions"
    message = failure.step_failure_data.error.message.strip()
    line = message.split("\n")[-1] if "\n" in message else message
    return line


def test_a_run_under_another_key_stops_before_extracting(pipeline_env, small_source, monkeypatch):
    tmp = pipeline_env("small_source")
    db = tmp / "warehouse.duckdb"
    run_week(WEEK)
    customer = busiest_customer(db)
    assert erase(customer, tmp).success
    assert not any(rows_of(db, customer).values())

    monkeypatch.setenv("PII_HASH_KEY", "production-key-2027")
    line = _stopped_before_extracting(run_week(WEEK, raise_on_error=False))
    assert "suppression list" in line and "another key" in line and "rekey_suppression" in line, (
        line
    )
    assert "production-key-2027" not in line
    assert not any(rows_of(db, customer).values())


def test_a_lost_local_key_is_detected_beside_the_warehouse(pipeline_env, small_source, monkeypatch):
    tmp = pipeline_env("small_source")
    monkeypatch.delenv("PII_HASH_KEY")
    db = tmp / "warehouse.duckdb"
    run_week(WEEK)
    key = tmp / ".pii_hash_key"  # beside WAREHOUSE_DUCKDB_PATH, not in DATA_DIR
    assert key.exists() and not (tmp / "data" / ".pii_hash_key").exists()
    customer = busiest_customer(db)
    assert erase(customer, tmp).success

    key.unlink()  # a new machine, a cleaned disk
    line = _stopped_before_extracting(run_week(WEEK, raise_on_error=False))
    assert str(key) in line and "rekey_suppression" in line, line
    assert not any(rows_of(db, customer).values())


def rotation_procedure() -> str:
    """The README's key-rotation commands, as written (the bash block of its "Rotating
    PII_HASH_KEY")."""
    text = README.read_text()
    section = text[text.index("Rotating PII_HASH_KEY") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README: no bash block under Rotating PII_HASH_KEY"
    return match.group(1)


def test_the_readme_key_rotation_moves_the_list_in_bigquery(
    pipeline_env, small_source, monkeypatch, tmp_path, bigquery_endpoint, bigquery_client
):
    from customer_assets_tests.graph.test_prod_graph import bq, run_prod, use_prod
    from customer_assets_tests.support.sources import BIGQUERY_PROJECT

    pipeline_env("small_source")
    use_prod(monkeypatch, bigquery_endpoint, bigquery_client)
    monkeypatch.setenv("PII_HASH_KEY", "production-key-2026")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    assert run_prod(WEEK).success
    tables = f"`{BIGQUERY_PROJECT}.customer_analytics`"

    def rows(customer: str) -> dict[str, int]:
        out = {}
        for table, column in bq(
            bigquery_client,
            f"SELECT table_name, column_name FROM "
            f"{tables}.INFORMATION_SCHEMA.COLUMNS WHERE column_name IN "
            "('customer_id', 'source_customer_id', 'retired_id', 'surviving_id')",
        ).itertuples(index=False, name=None):
            n = bq(
                bigquery_client,
                f"SELECT count(*) AS n FROM `{BIGQUERY_PROJECT}.customer_analytics.{table}` "
                f"WHERE upper(trim({column})) = '{customer}'",
            )["n"][0]
            out[table] = out.get(table, 0) + int(n)
        return out

    customer = bq(
        bigquery_client,
        f"SELECT customer_id FROM {tables[:-1]}.fact_transactions` GROUP BY 1 "
        "ORDER BY count(*) DESC, 1 LIMIT 1",
    )["customer_id"][0]
    assert rows(customer)["weekly_transactions"] > 0
    assert erase(customer, tmp_path, deployment="prod").success
    assert not any(rows(customer).values())

    # The procedure as written, in a shell, with the old key as the deployment's and the new one to
    # move to.
    env = {
        **os.environ,
        "NEW_PII_HASH_KEY": "production-key-2027",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", rotation_procedure()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    monkeypatch.setenv("PII_HASH_KEY", "production-key-2027")
    assert run_prod(WEEK).success
    assert not any(rows(customer).values())
    # The old key is refused now: the list is the new key's.
    monkeypatch.setenv("PII_HASH_KEY", "production-key-2026")
    with pytest.raises(dg.Failure, match="another key"):
        run_prod(WEEK)


def test_rekey_moves_what_the_sources_hold_and_stops_on_the_rest(tmp_path):
    """A list of older code (no fingerprint) under the old key: entries the source ids match are
    moved, an entry no id matches stops the job (its request named) until it is dropped on purpose;
    a repeat is a no-op."""
    from customer_assets.resources.warehouse_sql import DuckDBWarehouse
    from customer_assets.suppression import (
        SUPPRESSION,
        SuppressionKeyError,
        check_key,
        customer_hashes,
        suppressed_hashes,
    )
    from customer_assets.suppression_rekey import rekey

    wh = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    wh.ensure_schema("customer_analytics")
    table = wh.table(*SUPPRESSION)
    wh.execute(
        "CREATE TABLE {t} (customer_hash VARCHAR, erased_at TIMESTAMP, request VARCHAR)", t=table
    )
    for customer, request in (("C1", "DSR-1"), ("C2", "DSR-2")):
        wh.execute(
            "INSERT INTO {t} VALUES (@h, TIMESTAMP '2026-11-20 10:00:00', @r)",
            {"h": customer_hashes([customer], "old")[0], "r": request},
            t=table,
        )
    with pytest.raises(SuppressionKeyError, match="none recorded"):
        check_key(wh, "old")
    with pytest.raises(
        SuppressionKeyError,
        match=r"1 of the 2 entries .* \(requests: DSR-2\)\. Nothing was changed",
    ):
        rekey(wh, "old", "new", ["c1 ", "C3"])
    assert len(wh.query("SELECT * FROM {t}", t=table)) == 2
    moved = rekey(wh, "old", "new", ["c1 ", "C3"], drop_unmatched=True)
    assert (moved["moved"], moved["dropped"], moved["dropped_requests"]) == (1, 1, ["DSR-2"])
    check_key(wh, "new")
    # the old entry (hashed upper-cased) stood for C1 in any case: the id the source holds moves, as
    # spelled
    assert suppressed_hashes(wh, "new") == frozenset(customer_hashes(["c1"], "new"))
    assert wh.query("SELECT request, erased_at FROM {t}", t=table).astype(str).values.tolist() == [
        ["DSR-1", "2026-11-20 10:00:00"]
    ]
    assert rekey(wh, "old", "new", ["C1"])["moved"] == 0
    with pytest.raises(SuppressionKeyError, match="another key"):
        check_key(wh, "old")


def test_ids_differing_by_case_are_erased_apart_and_entries_of_older_code_keep_their_reach(
    tmp_path,
):
    """Issue 21 item 3: erasing C0000001 leaves c0000001 (another customer) alone; an entry written
    before ids kept their case (hashed upper-cased, no id_form) still covers every spelling it
    covered then."""
    from customer_assets.resources.warehouse_sql import DuckDBWarehouse
    from customer_assets.suppression import (
        SUPPRESSION,
        add_to_list,
        customer_hashes,
        ensure_table,
        suppressed_hashes,
        suppressed_mask,
    )

    wh = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    table = ensure_table(wh)
    add_to_list(wh, customer_hashes(["C0000001"], "k"), "k", "DSR-new")
    ids = pd.Series(["C0000001", "c0000001", " C0000001 ", "C0000002", "c0000002"], dtype="str")
    assert suppressed_mask(ids, suppressed_hashes(wh, "k"), "k").tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]
    # an entry of older code for C0000002, hashed as it then hashed every id: trimmed and
    # upper-cased
    from customer_assets.suppression import fingerprint

    wh.execute(
        "INSERT INTO {t} (customer_hash, erased_at, request, key_fingerprint) "
        "VALUES (@h, TIMESTAMP '2026-11-20 10:00:00', 'DSR-old', @f)",
        {"h": customer_hashes(["C0000002"], "k")[0], "f": fingerprint("k")},
        t=table,
    )
    assert suppressed_mask(ids, suppressed_hashes(wh, "k"), "k").tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]
    assert (
        wh.query("SELECT id_form FROM {t} ORDER BY request", t=wh.table(*SUPPRESSION))[
            "id_form"
        ].tolist()[0]
        == "trimmed"
    )


def test_erasing_a_person_reaches_all_their_records_and_never_another_namespace(tmp_path):
    """Issue 24 with erasure: erasing one id of a person erases every record of theirs (the CRM's,
    the ERP's, the shop's); an ERP id equal to a shop id is another customer's (the ERP has ids of
    its own), and stays."""
    from customer_assets.erasure import erase_from_warehouse, with_their_persons
    from customer_assets.resources.warehouse_sql import DuckDBWarehouse
    from customer_assets.suppression import suppressed_hashes, suppressed_mask

    wh = DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    wh.ensure_schema("customer_analytics")
    identity = wh.table("customer_analytics", "customer_identity_map")
    wh.execute(
        "CREATE TABLE {t} AS SELECT * FROM (VALUES ('C1', 'crm', 'C1'), ('C1', 'database', 'C1'), "
        "('C1', 'erp', '100'), ('100', 'database', '100'), ('c1', 'database', 'c1')) "
        "AS v(customer_id, source, source_customer_id)",
        t=identity,
    )
    facts = wh.table("customer_analytics", "weekly_transactions")
    wh.execute(
        "CREATE TABLE {t} AS SELECT * FROM (VALUES ('T1', 'C1'), ('T2', '100'), ('T3', 'c1')) "
        "AS v(transaction_id, customer_id)",
        t=facts,
    )
    ids = with_their_persons(wh, ["C1"])
    assert sorted(ids) == ["C1", "erp:100"]
    erase_from_warehouse(wh, ids, "k", "DSR-9")
    assert wh.query("SELECT customer_id FROM {t} ORDER BY 1", t=facts)["customer_id"].tolist() == [
        "100",
        "c1",
    ]
    left = wh.query("SELECT source, source_customer_id FROM {t} ORDER BY 1, 2", t=identity)
    assert left.values.tolist() == [["database", "100"], ["database", "c1"]]
    hashes = suppressed_hashes(wh, "k")
    # the ERP record 100 is suppressed as erp:100 (as the identity step reads the ERP), the shop's
    # 100 is not
    assert suppressed_mask(pd.Series(["erp:100", "100", "C1", "c1"]), hashes, "k").tolist() == [
        True,
        False,
        True,
        False,
    ]
