"""The real CRM client over HTTP against a loopback server: pages, 429, 401, timeouts, lost pages,
bad records."""

import json
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
import pytest

from customer_assets.logic.crm_records import standardise_crm
from customer_assets.resources.crm import CrmSource
from customer_assets.sources.crm_api import CrmApiClient, CrmAuthError, SlidingWindowLimiter
from customer_assets_tests.support.crm_server import CrmBehaviour, CrmServer, make_records

START, END = (
    datetime(2026, 11, 16, tzinfo=timezone.utc),
    datetime(2026, 11, 23, tzinfo=timezone.utc),
)


def client(url, sleeps=None, api_key="good-key", **overrides):
    options = {
        "page_size": 100,
        "min_page_size": 50,
        "max_retries": 5,
        "timeout_seconds": 2.0,
        "backoff_seconds": 0.001,
        "requests_per_minute": 10_000,
        **overrides,
    }
    return CrmApiClient(
        url, api_key, sleep=(sleeps if sleeps is not None else []).append, **options
    )


def test_all_pages_are_fetched():
    behaviour = CrmBehaviour(records=make_records(250))
    with CrmServer(behaviour) as url:
        extract = client(url).fetch_week(START, END)
    assert [r["customer_id"] for r in extract.records] == [f"C{i:07d}" for i in range(1, 251)]
    assert extract.pages == 3 and not extract.partial
    assert [int(r["offset"]) for r in behaviour.requests] == [0, 100, 200]
    assert behaviour.requests[0]["updated_since"] == START.isoformat()


def test_429_bursts_back_off_honouring_retry_after():
    behaviour = CrmBehaviour(records=make_records(120), rate_limited_requests=3, retry_after="0.25")
    sleeps: list[float] = []
    with CrmServer(behaviour) as url:
        extract = client(url, sleeps).fetch_week(START, END)
    assert len(extract.records) == 120 and extract.retries == 3 and not extract.partial
    assert sleeps[:3] == [0.25, 0.25, 0.25]


def test_429_without_retry_after_backs_off_exponentially_and_gives_up_after_5():
    behaviour = CrmBehaviour(records=make_records(10), rate_limited_requests=100, retry_after=None)
    sleeps: list[float] = []
    from customer_assets.sources.crm_api import CrmUnavailableError

    with CrmServer(behaviour) as url, pytest.raises(CrmUnavailableError, match="HTTP 429"):
        client(url, sleeps, backoff_seconds=1.0).fetch_week(START, END)
    assert sleeps[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    # Each page gave up after its 5 retries; after 3 such pages in a row the CRM counts as
    # unavailable.
    assert len(behaviour.requests) == 3 * 6


def test_401_stops_with_a_clear_message():
    with CrmServer(CrmBehaviour(records=make_records(5))) as url:
        with pytest.raises(CrmAuthError, match="credentials may have expired"):
            client(url, api_key="expired").fetch_week(START, END)
        resource = CrmSource(api_url=url, api_key="expired")
        with pytest.raises(dg.Failure, match="credentials may have expired") as raised:
            resource.fetch_week(START, END, source_db=None)
    assert raised.value.allow_retries is False


def test_timeouts_shrink_pages_down_to_50():
    behaviour = CrmBehaviour(records=make_records(130), slow_above_limit=50, slow_seconds=1.0)
    with CrmServer(behaviour) as url:
        extract = client(url, page_size=200, timeout_seconds=0.3).fetch_week(START, END)
    assert len(extract.records) == 130 and not extract.partial
    assert extract.page_size_reductions == 2  # 200 -> 100 -> 50
    assert {int(r["limit"]) for r in behaviour.requests[-3:]} == {50}


def test_a_page_that_keeps_failing_is_recorded_and_the_rest_kept():
    behaviour = CrmBehaviour(records=make_records(300), failing_offsets={100})
    with CrmServer(behaviour) as url:
        extract = client(url).fetch_week(START, END)
    assert extract.partial and extract.missing_pages == [
        {"offset": 100, "limit": 100, "error": "HTTP 500"}
    ]
    ids = [r["customer_id"] for r in extract.records]
    assert len(ids) == 200 and "C0000100" in ids and "C0000101" not in ids and "C0000201" in ids
    assert extract.retries == 5


def test_malformed_records_are_counted_and_missing_fields_recorded():
    records = make_records(4)
    records[1] = "not a record"
    records[2] = {**records[2], "customer_id": "  "}
    records[3] = {**records[3], "email": None, "lifetime_value": None}
    with CrmServer(CrmBehaviour(records=records)) as url:
        extract = client(url).fetch_week(START, END)
    assert len(extract.records) == 2 and extract.malformed_records == 2
    assert extract.missing_fields == {"email": 1, "lifetime_value": 1}


def test_rate_limit_is_100_requests_in_any_minute():
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    limiter = SlidingWindowLimiter(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):
        limiter.acquire()
        now[0] += 0.1
    assert sleeps == []
    limiter.acquire()
    assert sleeps == [pytest.approx(50.0)]  # the first call was 60 s before the 101st can go


def test_standardised_records_hash_contact_details_with_the_key():
    records = make_records(2) + [
        {
            **make_records(1)[0],
            "customer_id": " C0000001 ",
            "email": " USER1@Example.com",
            "updated_at": "2026-11-18T00:00:00Z",
        }
    ]
    records.append({**make_records(3)[2], "email": "not-an-email"})
    frame, counts = standardise_crm(records, "key-1")
    assert frame["customer_id"].tolist() == [
        "C0000001",
        "C0000002",
        "C0000003",
    ]  # trimmed, the latest kept
    # Case is kept (issue 21): identity resolution links a CRM id to the shop's customer it spells.
    assert standardise_crm([{**make_records(1)[0], "customer_id": " c0000001"}], "key-1")[0][
        "customer_id"
    ].tolist() == ["c0000001"]
    assert counts == {"records": 4, "invalid_emails": 1, "duplicate_ids": 1, "unparseable_dates": 0}
    again, _ = standardise_crm(make_records(1), "key-1")
    other, _ = standardise_crm(make_records(1), "key-2")
    assert frame.loc[0, "email_hash"] == again.loc[0, "email_hash"] != other.loc[0, "email_hash"]
    assert pd.isna(frame.loc[2, "email_hash"])
    assert "example.com" not in frame.to_csv() and "555" not in frame.to_csv()


def test_partial_extract_is_marked_in_the_materialization(tmp_path):
    from customer_assets.assets.profile_inputs import crm_customers
    from customer_assets.resources.pii import PiiKey
    from customer_assets.resources.postgres import PostgresSource
    from customer_assets.settings import PipelineSettings

    behaviour = CrmBehaviour(records=make_records(150), failing_offsets={100})
    with CrmServer(behaviour) as url:
        result = dg.materialize(
            [crm_customers],
            partition_key="2026-11-16",
            resources={
                "crm": CrmSource(
                    api_url=url,
                    api_key="good-key",
                    page_size=100,
                    backoff_seconds=0.001,
                ),
                "pii": PiiKey(hash_key="k"),
                "source_db": PostgresSource(host="unused"),  # the API mode never touches it
                "settings": PipelineSettings(
                    data_dir=str(tmp_path), reports_dir=str(tmp_path), etl_log_dir=str(tmp_path)
                ),
                "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path)),
            },
        )
    metadata = result.asset_materializations_for_node("etl__crm_customers")[0].metadata
    assert metadata["partial"].value is True and metadata["dagster/row_count"].value == 100
    assert metadata["extract"].value["missing_pages"][0]["offset"] == 100


def test_crm_dates_in_any_iso_form_are_read_and_others_counted():
    """A column mixing ISO 8601 forms (a date, seconds, fractions, offsets) is read value by value;
    pandas would otherwise infer one format from the first value and turn the others into missing
    dates, silently."""
    forms = [
        "2026-11-17T10:00:00Z",
        "2026-11-17T10:00:00.250Z",
        "2026-11-17",
        "2026-11-17T12:00:00+02:00",
        "17/11/2026",
    ]
    records = [
        {**record, "updated_at": form, "signup_date": form}
        for record, form in zip(make_records(len(forms)), forms, strict=False)
    ]
    frame, counts = standardise_crm(records, "k")
    assert frame["updated_at"].tolist()[:4] == [
        pd.Timestamp("2026-11-17 10:00", tz="UTC"),
        pd.Timestamp("2026-11-17 10:00:00.250", tz="UTC"),
        pd.Timestamp("2026-11-17", tz="UTC"),
        pd.Timestamp("2026-11-17 10:00", tz="UTC"),
    ]
    assert pd.isna(frame.loc[4, "updated_at"]) and pd.isna(frame.loc[4, "signup_date"])
    assert counts["unparseable_dates"] == 2  # the last record's updated_at and signup_date


def test_the_crm_table_reads_as_the_same_records_as_the_api_gives(small_source):
    """The embedded default reads ``crm_customers`` through COPY as text; the result is what the
    same rows give as records of Python values (what psycopg2 returns, what the API path
    standardises)."""
    import psycopg2

    from customer_assets.logic.crm_records import CRM_FIELDS
    from customer_assets.sources.crm_api import (
        CRM_TABLE_SQL,
        CrmExtract,
        accept_records,
        fetch_week_from_table,
    )

    start, end = (
        datetime(2026, 11, 9, tzinfo=timezone.utc),
        datetime(2026, 11, 16, tzinfo=timezone.utc),
    )
    with psycopg2.connect(small_source) as conn:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(
                "UPDATE crm_customers SET customer_id = '  ' WHERE ctid IN "
                "(SELECT ctid FROM crm_customers WHERE updated_at >= %s AND updated_at < %s LIMIT 2)",
                (start, end),
            )
            from_table = fetch_week_from_table(conn, start, end)
            cur.execute(CRM_TABLE_SQL.format(table="crm_customers"), {"start": start, "end": end})
            as_records = CrmExtract(requests=1, pages=1)
            accept_records(
                [dict(zip(CRM_FIELDS, row, strict=False)) for row in cur.fetchall()], as_records
            )
        conn.rollback()  # the fixture's database stays as seeded
    assert from_table.malformed_records == as_records.malformed_records == 2
    assert from_table.summary() == as_records.summary() and from_table.summary()["records"] > 100
    table_frame, table_counts = standardise_crm(from_table.frame(), "k")
    records_frame, records_counts = standardise_crm(as_records.records, "k")
    pd.testing.assert_frame_equal(table_frame, records_frame)
    assert table_counts == records_counts and table_counts["unparseable_dates"] == 0
    # and the same records as the API's JSON would carry them: ISO 8601 text, numbers
    as_json = json.loads(json.dumps(as_records.records, default=lambda value: value.isoformat()))
    json_frame, json_counts = standardise_crm(as_json, "k")
    pd.testing.assert_frame_equal(json_frame, table_frame)
    assert json_counts == table_counts


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_an_unreachable_crm_gives_up_after_a_few_pages_instead_of_walking_offsets_forever():
    from customer_assets.sources.crm_api import CrmUnavailableError

    with pytest.raises(CrmUnavailableError, match="3 pages in a row failed") as raised:
        client(_closed_port(), max_retries=1).fetch_week(START, END)
    assert "offsets [0, 100, 200]" in str(raised.value) and "connection failed" in str(raised.value)


def test_a_crm_that_answers_too_slowly_stops_at_its_time_budget():
    from customer_assets.sources.crm_api import CrmUnavailableError

    ticks = iter(range(0, 10_000, 400))  # every look at the clock: 400 s later
    behaviour = CrmBehaviour(records=make_records(1_000))
    with CrmServer(behaviour) as url, pytest.raises(CrmUnavailableError, match="budget of 600s"):
        client(url, time_budget_seconds=600, clock=lambda: next(ticks)).fetch_week(START, END)
    assert len(behaviour.requests) == 1  # the first page, then the budget was spent


def test_an_unreachable_crm_fails_the_profiles_but_not_the_weeks_transactions(
    pipeline_env, small_source
):
    """The run ends bounded and specific: the transactions of the week are loaded, the CRM step
    fails with one message, no retry, and the week's intermediates are removed."""
    import time

    from customer_assets.deployments import resources_for
    from customer_assets_tests.support.pipeline import ASSETS, warehouse

    tmp = pipeline_env("small_source")
    resources = resources_for("local")
    resources["crm"] = CrmSource(api_url=_closed_port(), api_key="k", backoff_seconds=0.01)
    started = time.monotonic()
    result = dg.materialize(
        ASSETS,
        partition_key="2026-11-16",
        resources=resources,
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success and time.monotonic() - started < 120
    failures = {
        e.step_key: e.step_failure_data.error.message for e in result.get_step_failure_events()
    }
    assert list(failures) == ["etl__crm_customers"]
    assert (
        "CRM unavailable" in failures["etl__crm_customers"]
        and "pages in a row failed" in failures["etl__crm_customers"]
    )
    loaded = warehouse(
        tmp / "warehouse.duckdb", "SELECT count(*) AS n FROM customer_analytics.weekly_transactions"
    )
    assert loaded["n"][0] > 1000
    assert not [p for p in (tmp / "data" / "etl").rglob("*") if p.is_file()]
    record = json.loads(next((tmp / "logs" / "etl").glob("failed_*.json")).read_text())
    assert record["step"] == "etl__crm_customers" and "CRM unavailable" in record["error"]
