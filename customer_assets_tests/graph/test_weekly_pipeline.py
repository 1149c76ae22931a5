"""The whole weekly graph against a real PostgreSQL: idempotency, conservation, PII, quarantine,
stops."""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from customer_assets.partitions import week_bounds
from customer_assets.sensors import etl_failure_cleanup
from customer_assets_tests.support.pipeline import ASSETS, run_week, warehouse
from customer_assets_tests.support.sources import SMALL, create_source, query

WEEK, EARLIER = "2026-11-16", "2026-11-09"
BEFORE_SUMMARY = dg.AssetSelection.all() - dg.AssetSelection.assets(
    dg.AssetKey(["etl", "pipeline_summary"])
)


def _week_rows(tmp: Path, week: str) -> pd.DataFrame:
    return warehouse(
        tmp / "warehouse.duckdb",
        f"""SELECT * FROM customer_analytics.weekly_transactions
        WHERE week_start = TIMESTAMP '{week}' ORDER BY transaction_id""",
    )


def test_rerunning_a_week_replaces_it_exactly(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    first = run_week(WEEK)
    rows_once = _week_rows(tmp, WEEK)
    run_week(WEEK)
    rows_twice = _week_rows(tmp, WEEK)
    assert len(rows_once) > 1000 and rows_once["transaction_id"].is_unique
    pd.testing.assert_frame_equal(rows_once, rows_twice)
    loaded = first.asset_materializations_for_node("customer_analytics__weekly_transactions")[
        0
    ].metadata
    assert loaded["rows_loaded"].value == len(rows_once)
    metrics = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.data_quality_metrics"
    )
    assert len(metrics) == 1 and metrics.loc[0, "passed_records"] == len(rows_once)


def test_two_weeks_stay_apart(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    run_week(EARLIER)
    run_week(WEEK)
    earlier = _week_rows(tmp, EARLIER)
    run_week(WEEK)
    per_week = warehouse(
        tmp / "warehouse.duckdb",
        """SELECT week_start, count(*) AS n, min("timestamp") AS first,
        max("timestamp") AS last FROM customer_analytics.weekly_transactions GROUP BY 1 ORDER BY 1""",
    )
    assert [str(d.date()) for d in per_week["week_start"]] == [EARLIER, WEEK]
    pd.testing.assert_frame_equal(_week_rows(tmp, EARLIER), earlier)
    for _, row in per_week.iterrows():
        start, end = week_bounds(str(row.week_start.date()))
        assert start <= row["first"] and row["last"] < end
    metrics = warehouse(
        tmp / "warehouse.duckdb", "SELECT week_start FROM customer_analytics.data_quality_metrics"
    )
    assert len(metrics) == 2


def test_rows_are_conserved_and_dirty_rows_quarantined_with_their_reason(
    pipeline_env, small_source
):
    tmp = pipeline_env("small_source")
    run_week(WEEK, selection=BEFORE_SUMMARY, keep_intermediates_in=tmp / "kept")
    start, end = week_bounds(WEEK)
    extracted = query(
        small_source,
        """SELECT count(*) FROM transactions WHERE status = 'completed'
                                       AND "timestamp" >= %s AND "timestamp" < %s""",
        (start, end),
    )[0][0]
    etl = tmp / "kept" / "etl"
    validated = pd.read_parquet(etl / "validated_transactions" / f"{WEEK}.parquet")
    quarantined = pd.read_parquet(etl / "quarantined_transactions" / f"{WEEK}.parquet")
    assert len(validated) + len(quarantined) == extracted
    seeded = pd.DataFrame(
        query(
            small_source,
            "SELECT transaction_id, expected_reason FROM demo_seed_dirty_rows "
            "WHERE week_start = %s",
            (start.date(),),
        ),
        columns=["transaction_id", "expected_reason"],
    )
    assert set(seeded["expected_reason"]) >= {
        "MISSING_AMOUNT",
        "INVALID_CURRENCY",
        "PRECISION_MISMATCH",
        "UNKNOWN_PRODUCT",
        "DUPLICATE_TRANSACTION_ID",
    }
    reasons = quarantined.groupby("transaction_id", dropna=False)["reason_codes"].agg(";".join)
    for row in seeded.itertuples():
        if row.expected_reason in ("MISSING_TRANSACTION_ID", "MISSING_CUSTOMER_ID"):
            continue  # identified below by the null column itself
        assert row.expected_reason in reasons.get(row.transaction_id, ""), row
    # The kept copy of each duplicate is validated, the other is quarantined.
    duplicated = seeded.loc[
        seeded["expected_reason"] == "DUPLICATE_TRANSACTION_ID", "transaction_id"
    ]
    assert duplicated.isin(validated["transaction_id"]).all()
    assert (
        quarantined["customer_id"].isna().sum()
        == (seeded["expected_reason"] == "MISSING_CUSTOMER_ID").sum()
    )
    report = json.loads((tmp / "data" / "reports" / WEEK / "quality_report.json").read_text())
    assert report["total_records"] == extracted and report["quarantined_records"] == len(
        quarantined
    )
    anomalies = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.flagged_transactions"
    )
    assert len(anomalies) == report["flagged_records"] == validated["is_anomaly"].sum()
    assert "HIGH_FREQUENCY_CUSTOMER" in ";".join(anomalies["anomaly_flags"])  # the seeded bot


def test_no_email_phone_or_address_anywhere(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    run_week(WEEK, selection=BEFORE_SUMMARY, keep_intermediates_in=tmp / "kept")
    pii = query(
        small_source, "SELECT email, phone, address FROM customers ORDER BY customer_id LIMIT 200"
    )
    needles = {value for row in pii for value in row}
    texts = []
    for path in tmp.rglob("*"):
        if path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).to_csv())
        elif path.suffix in (".json", ".csv"):
            texts.append(path.read_text())
    texts.append(_week_rows(tmp, WEEK).to_csv())
    blob = "\n".join(texts)
    assert len(texts) >= 8
    assert "@example.com" not in blob and not any(n in blob for n in needles)
    for text in texts:
        header = text.splitlines()[0] if text else ""
        assert not {"email", "phone", "address"} & set(header.split(","))


def test_success_removes_intermediates_and_writes_a_summary(pipeline_env, small_source):
    tmp = pipeline_env("small_source")
    run_week(WEEK)
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]
    summaries = list((tmp / "logs" / "etl").glob("etl_*.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    intermediates = [
        k for a in ASSETS for k in a.keys if k.path[0] == "etl" and k.path[1] != "pipeline_summary"
    ]
    assert summary["cleanup"] == {"removed": len(intermediates), "remaining": []}
    assert summary["load"]["rows_loaded"] == len(_week_rows(tmp, WEEK))
    assert (
        summary["records_processed"]
        == summary["load"]["rows_loaded"] + summary["records_quarantined"]
    )


def test_one_asset_of_a_finished_week_run_alone_leaves_the_week_as_loaded(
    pipeline_env, small_source
):
    """Issue 13: "Materialize" on one asset of a finished week must not fail (its intermediates were
    removed) nor paint the week red; it does nothing, says why, and the warehouse keeps the week."""
    tmp = pipeline_env("small_source")
    instance = dg.DagsterInstance.ephemeral()
    run_week(WEEK, instance=instance)
    rows = _week_rows(tmp, WEEK)
    alone = [
        ["customer_analytics", "weekly_transactions"],
        ["etl", "validated_transactions"],
        ["etl", "transformed_transactions"],
        ["customer_analytics", "customer_history"],
        ["etl", "unified_customer_profiles"],
        ["customer_analytics", "weekly_customer_profiles"],
        ["etl", "pipeline_summary"],
    ]
    for path in alone:
        key = dg.AssetKey(path)
        result = run_week(
            WEEK, selection=dg.AssetSelection.assets(key), instance=instance, raise_on_error=False
        )
        assert result.success, path
        assert not result.get_asset_materialization_events(), path
        warnings = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if "already succeeded" in e.user_message
        ]
        assert warnings and "materialize it from etl/raw_transactions" in warnings[0], path
        status = instance.get_status_by_partition(key, [WEEK], ASSETS[0].partitions_def)
        assert status[WEEK] == dg.AssetPartitionStatus.MATERIALIZED, path
    pd.testing.assert_frame_equal(_week_rows(tmp, WEEK), rows)
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]
    # A week that never finished still fails for want of its input, and says what to do.
    result = run_week(
        EARLIER,
        selection=dg.AssetSelection.assets(dg.AssetKey(alone[0])),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "materialize the upstream assets again" in str(failure.step_failure_data.error)


# every output of each multi-asset that runs in part, from the definitions: one added later is
# covered
SUBSET_OUTPUTS = [
    key
    for assets_def in ASSETS
    if isinstance(assets_def, dg.AssetsDefinition)
    and assets_def.can_subset
    and len(assets_def.keys) > 1
    for key in sorted(assets_def.keys)
]


@pytest.mark.parametrize("key", SUBSET_OUTPUTS, ids=lambda key: key.to_user_string())
def test_an_asset_materialized_with_its_upstream_runs_part_of_a_multi_asset(
    pipeline_env, small_source, key
):
    """ "Materialize" with the upstream assets (the UI's "upstream" selection,
    ``dagster asset materialize --select '+<key>'``) runs only the selected outputs of a
    multi-asset (validation without its quarantine table, say): an output the run did not select
    is left out, not failed on, and no file of the week's customers is left behind."""
    tmp = pipeline_env("small_source")
    assert len(SUBSET_OUTPUTS) >= 7, "the multi-assets that run in part were not found"
    result = run_week(
        WEEK, selection=dg.AssetSelection.assets(key).upstream(), raise_on_error=False
    )
    failures = [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert key in materialized
    same_step = next(a for a in ASSETS if isinstance(a, dg.AssetsDefinition) and key in a.keys)
    selected = dg.AssetSelection.assets(key).upstream().resolve(ASSETS)
    assert materialized & same_step.keys <= selected
    if key.path[0] == "customer_analytics":  # the warehouse table was written (for the week)
        loaded = next(e for e in result.get_asset_materialization_events() if e.asset_key == key)
        rows = loaded.materialization.metadata["dagster/row_count"].value
        week_start, _ = week_bounds(WEEK)
        held = warehouse(
            tmp / "warehouse.duckdb",
            f"SELECT count(*) AS n FROM {key.path[0]}.{key.path[1]} "
            f"WHERE week_start = '{week_start:%Y-%m-%d}'",
        )
        assert held["n"].iloc[0] == rows
    # a run without the summary leaves no file of the week's customers behind either
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def broken_source(pg_server):
    return create_source(
        pg_server, "broken_source", dataclasses.replace(SMALL, dirty_fraction=0.15)
    )


def test_a_broken_source_stops_before_transform_and_the_run_cleans_up(pipeline_env, broken_source):
    tmp = pipeline_env("broken_source")
    instance = dg.DagsterInstance.ephemeral()
    result = run_week(WEEK, instance=instance, raise_on_error=False)
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "etl/transformed_transactions" not in materialized
    assert "customer_analytics/weekly_transactions" not in materialized
    # The bad week is still recorded in the quality history.
    metrics = warehouse(
        tmp / "warehouse.duckdb", "SELECT * FROM customer_analytics.data_quality_metrics"
    )
    assert metrics.loc[0, "quarantined_records"] / metrics.loc[0, "total_records"] > 0.10
    check = [e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_rate"][
        0
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    # The run cleaned up after itself, no daemon or sensor involved: the files written before the
    # check failed, and those of the profile branch.
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]
    records = list((tmp / "logs" / "etl").glob("failed_*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["week_start"] == WEEK and record["step"] == "validate_transactions"
    assert "blocking asset check" in record["error"] and record["remaining"] == []
    removed = {Path(p).parent.name for p in record["removed"]}
    assert {"raw_transactions", "validated_transactions", "quarantined_transactions"} <= removed
    assert {"crm_customers", "customer_event_aggregates"} <= removed

    # The run-failure sensor, a backstop, sees the run already recorded and writes nothing more.
    run = instance.get_run_by_id(result.run_id)
    failure = [
        e
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    ][0]
    from customer_assets.deployments import resources_for

    resources = resources_for("local")
    context = dg.build_run_status_sensor_context(
        sensor_name="etl_failure_cleanup",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=failure.dagster_event,
        resources={"settings": resources["settings"], "alerts": resources["alerts"]},
    ).for_run_failure()
    etl_failure_cleanup(context)
    assert len(list((tmp / "logs" / "etl").glob("failed_*.json"))) == 1


def _table(tmp: Path, table: str, order: str) -> pd.DataFrame:
    return warehouse(
        tmp / "warehouse.duckdb", f"SELECT * FROM customer_analytics.{table} ORDER BY {order}"
    )


def test_profiles_and_dimension_fill_and_stay_stable(pipeline_env, small_source):
    tmp = pipeline_env("small_source", crm=True)
    run_week(WEEK)
    profiles = _table(tmp, "weekly_customer_profiles", "customer_id")
    dim = _table(tmp, "dim_customers", "customer_id, version")
    assert len(profiles) > 300 and profiles["customer_id"].is_unique
    assert (profiles["record_count"] == len(profiles)).all() and profiles[
        "run_timestamp"
    ].notna().all()
    assert (
        set(profiles["status"]) >= {"active", "churned"}
        and profiles["engagement_score"].between(0, 100).all()
    )
    assert set(dim["customer_id"]) == set(profiles["customer_id"]) and dim["is_current"].all()
    report = json.loads((tmp / "data" / "reports" / WEEK / "transform_log.json").read_text())
    # the seeded guests
    assert report["match_rate"] >= 0.8 and report["dropped"]["UNMATCHED_ID"] > 0
    run_week(WEEK)
    pd.testing.assert_frame_equal(_table(tmp, "dim_customers", "customer_id, version"), dim)
    again = _table(tmp, "weekly_customer_profiles", "customer_id")
    pd.testing.assert_frame_equal(
        again.drop(columns="run_timestamp"), profiles.drop(columns="run_timestamp")
    )


def test_backfilling_an_older_week_gives_the_same_history(pipeline_env, small_source, tmp_path):
    histories = []
    for order in ([EARLIER, WEEK], [WEEK, EARLIER]):
        tmp = pipeline_env("small_source", crm=True)
        for week in order:
            run_week(week)
        histories.append(_table(tmp, "dim_customers", "customer_id, version"))
        (tmp / "warehouse.duckdb").unlink()
    pd.testing.assert_frame_equal(histories[0], histories[1])
    assert (histories[0]["version"] > 1).any()  # some customers changed between the two weeks


def test_low_match_rate_fails_with_a_hint_about_id_formats(pipeline_env, small_source, tmp_path):
    from customer_assets.assets.profiles import unified_customer_profiles
    from customer_assets.deployments import resources_for
    from customer_assets.frames import StoredFrame
    from customer_assets.logic.crm_records import standardise_crm
    from customer_assets.logic.resolution import IDENTITY_COLUMNS
    from customer_assets.logic.source_records import standardise_erp

    pipeline_env("small_source")
    resources = resources_for("local")
    events = pd.DataFrame(
        {
            "customer_id": [f"CUST-{i}" for i in range(10)] + ["C0000001"],
            "page_views": 1,
            "unique_features_used": 0,
            "purchase_count": 0,
            "purchase_amount": 0.0,
            "support_interactions": 0,
            "last_event_at": pd.Timestamp("2026-11-17", tz="UTC"),
        }
    )
    empty, _ = standardise_crm([], "k")  # the CRM had no updates this week
    transactions = tmp_path / "transformed.parquet"  # no transactions this week
    pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "transaction_id": pd.Series(dtype="str"),
            "amount_usd": pd.Series(dtype=float),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "country": pd.Series(dtype="str"),
            "segment": pd.Series(dtype="str"),
        }
    ).to_parquet(transactions)
    context = dg.build_asset_context(partition_key=WEEK)
    no_erp, _ = standardise_erp(
        pd.DataFrame(columns=["customer_id", "email", "phone", "country", "updated_at"]), "k"
    )
    results = list(
        unified_customer_profiles(
            context,
            settings=resources["settings"],
            source_db=resources["source_db"],
            crm=resources["crm"],
            pii=resources["pii"],
            warehouse=resources["warehouse"],
            alerts=resources["alerts"],
            crm_customers=empty,
            erp_customers=no_erp,
            customer_event_aggregates=events,
            transformed_transactions=StoredFrame(transactions),
            customer_identity_map=pd.DataFrame(columns=IDENTITY_COLUMNS),
        )
    )
    check = next(
        r for r in results if isinstance(r, dg.AssetCheckResult) and r.check_name == "match_rate"
    )
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "id formats" in check.metadata["result"].value
