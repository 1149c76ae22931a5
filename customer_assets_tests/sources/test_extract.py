"""The streaming extract against a real PostgreSQL: columns, orphans, batches, replica,
permissions."""

import logging
import os
import threading
import time
from datetime import datetime, timezone

import pandas as pd
import psycopg2
import pyarrow.compute as pc
import pytest

from customer_assets.dagster_types import check_raw_batch
from customer_assets.frames import ParquetSink
from customer_assets.partitions import week_bounds
from customer_assets.resources.postgres import PostgresSource, SourcePermissionError
from customer_assets.schemas import RawTransactions
from customer_assets.sources.copy_stream import _copy_into
from customer_assets.sources.extract import stream_week, to_raw_frame
from customer_assets_tests.support.sources import query, socket_dir

# The extract's columns, in order, spelled out: what the rest of the pipeline (and the warehouse)
# relies on.
RAW_COLUMNS = [
    "transaction_id",
    "customer_id",
    "country",
    "segment",
    "amount",
    "currency",
    "timestamp",
    "product_id",
    "product_name",
    "category",
    "customer_created_at",
    "customer_exists",
    "product_exists",
    "invalid_encoding",
]

WEEK = "2026-11-16"


def _source(pg_server, **overrides) -> PostgresSource:
    return PostgresSource(
        **{"host": socket_dir(pg_server), "user": "postgres", "dbname": "small_source", **overrides}
    )


def _completed_in_week(dsn):
    start, end = week_bounds(WEEK)
    return query(
        dsn,
        """SELECT count(*) FROM transactions WHERE status = 'completed'
                         AND "timestamp" >= %s AND "timestamp" < %s""",
        (start, end),
    )[0][0]


def test_extract_keeps_every_completed_row_and_no_pii(pg_server, small_source):
    start, end = week_bounds(WEEK)
    with _source(pg_server).connect() as conn:
        df = to_raw_frame(stream_week(conn, start, end))
    RawTransactions.validate(df)
    assert list(df.columns) == RAW_COLUMNS
    assert not {"email", "phone", "address"} & set(df.columns)
    assert len(df) == _completed_in_week(small_source)
    assert df["timestamp"].min() >= start and df["timestamp"].max() < end
    # Orphans stay, marked, for validation to quarantine.
    orphans = query(
        small_source,
        """SELECT count(*) FROM demo_seed_dirty_rows d WHERE week_start = %s
                                     AND kind IN ('unknown_customer', 'null_customer_id')""",
        (start.date(),),
    )[0][0]
    assert orphans > 0 and (~df["customer_exists"]).sum() == orphans
    assert (~df["product_exists"]).sum() > 0


def test_small_blocks_give_the_same_rows(pg_server, small_source):
    start, end = week_bounds(WEEK)
    with _source(pg_server).connect() as conn:
        whole = stream_week(conn, start, end)
        pieces = stream_week(conn, start, end, block_size=16 * 1024)
    assert pieces.num_rows == whole.num_rows
    assert len(pieces.to_batches()) > 5 > len(whole.to_batches())  # parsed block by block
    assert sorted(pieces.column("transaction_id").to_pylist(), key=str) == sorted(
        whole.column("transaction_id").to_pylist(), key=str
    )


def test_empty_week_gives_an_empty_typed_table(pg_server, small_source):
    start = datetime(2020, 1, 6, tzinfo=timezone.utc)
    with _source(pg_server).connect() as conn:
        df = to_raw_frame(stream_week(conn, start, start.replace(day=13)))
    assert df.empty and list(df.columns) == RAW_COLUMNS


def test_refused_replica_falls_back_to_primary(pg_server, small_source, caplog, tmp_path):
    source = _source(pg_server, read_host=str(tmp_path / "no-server-here"), connect_timeout=2)
    with caplog.at_level(logging.WARNING), source.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM products")
        assert cur.fetchone()[0] == 60
    assert "falling back to the primary" in caplog.text


def test_permission_denied_stops_with_a_clear_error(pg_server, small_source):
    with psycopg2.connect(small_source) as conn, conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS no_grants; CREATE ROLE no_grants LOGIN")
    conn.close()
    start, end = week_bounds(WEEK)
    with (
        pytest.raises(SourcePermissionError) as raised,
        _source(pg_server, user="no_grants").connect() as conn,
    ):
        stream_week(conn, start, end)
    assert (
        "Permission denied" in raised.value.description and "no_grants" in raised.value.description
    )
    assert raised.value.allow_retries is False


def test_wrong_password_is_not_logged(pg_server, small_source):
    source = _source(
        pg_server, host="127.0.0.1", port=1, password="s3cret-value", connect_timeout=1
    )
    with pytest.raises(psycopg2.OperationalError) as raised, source.connect():
        pass
    assert "s3cret-value" not in str(raised.value)


def test_only_sql_null_is_null_in_a_copy(small_source):
    """COPY's CSV marks NULL as an unquoted empty field and quotes nothing else, so text such as NA
    (Namibia's country code), N/A, null or NaN must stay text, as psycopg2 would give it."""
    import pyarrow as pa

    from customer_assets.sources.copy_stream import copy_query

    values = ["NA", "N/A", "null", "NULL", "NaN", "nan", "#N/A", "", " ", None]
    sql = "SELECT v FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, i) ORDER BY i"
    with psycopg2.connect(small_source) as conn:
        table = copy_query(conn, sql, (values,), pa.schema([("v", pa.string())]))
        with conn.cursor() as cur:
            cur.execute(sql, (values,))
            fetched = [row[0] for row in cur.fetchall()]
    assert table["v"].to_pylist() == fetched == values


def test_a_value_that_does_not_parse_names_its_column(pg_server, small_source):
    """Issue 12, finding 3: an error that must stop the week names the column, not pyarrow's column
    number."""
    import pyarrow as pa

    from customer_assets.sources.copy_stream import ExtractParseError, copy_query

    schema = pa.schema([("transaction_id", pa.string()), ("amount", pa.float64())])
    with (
        _source(pg_server).connect() as conn,
        pytest.raises(
            ExtractParseError,
            match="column 'amount' holds a value the extract cannot read as double",
        ),
    ):
        copy_query(conn, "SELECT 'T1' AS transaction_id, 'twelve' AS amount", None, schema)


def test_a_timestamp_pandas_cannot_hold_names_its_column(pg_server, small_source):
    """Review finding: a 0001-01-01 sentinel failed the week with an unnamed out-of-bounds cast
    error."""
    from customer_assets.sources.copy_stream import ExtractParseError, copy_query
    from customer_assets.sources.extract import ARROW_SCHEMA, _finish

    sql = (
        "SELECT 'T1' AS transaction_id, 'C1' AS customer_id, 'US' AS country, 'smb' AS segment, 1.0::float8 "
        "AS amount, 'USD' AS currency, now() AT TIME ZONE 'UTC' AS \"timestamp\", 'P1' AS product_id, "
        "'x' AS product_name, 'y' AS category, '0001-01-01'::timestamp AS customer_created_at, "
        "true AS customer_exists, true AS product_exists"
    )
    with (
        _source(pg_server).connect() as conn,
        pytest.raises(
            ExtractParseError, match="'customer_created_at' holds a timestamp outside 1677-2262"
        ),
    ):
        copy_query(conn, sql, None, ARROW_SCHEMA, finish=_finish)


@pytest.mark.parametrize(
    "message,advice",
    [
        ('FATAL:  database "prod" does not exist', "check DB_NAME"),
        (
            'connection to server at "analytics-database.internal" failed: FATAL:  role "etl" does not exist',
            "check DB_USER",
        ),
        ('FATAL:  permission denied for database "prod"', "GRANT CONNECT"),
        ('FATAL:  password authentication failed for user "etl"', "check DB_USER and DB_PASSWORD"),
        ("FATAL:  the database system is starting up", None),
        ("could not connect to server: Connection refused", None),
        ("server closed the connection unexpectedly", None),
    ],
)
def test_only_refusals_no_retry_can_fix_are_permanent(message, advice):
    """libpq's messages: a refusal gets one line of advice and no retry; a server starting up, a
    refused or dropped connection stay transient (the retry policy's)."""
    from customer_assets.resources.postgres import permanent_refusal

    refusal = permanent_refusal(psycopg2.OperationalError(message), "db.internal", "etl", "prod")
    assert (
        (refusal is None)
        if advice is None
        else (advice in refusal.description and not refusal.allow_retries)
    )


@pytest.fixture
def rolled_back(small_source):
    """A connection to the small source whose changes are rolled back after the test."""
    connection = psycopg2.connect(small_source)
    yield connection
    connection.rollback()
    connection.close()


def test_a_value_larger_than_the_block_is_read_whole(rolled_back, tmp_path):
    """Issue 21, item 11: a product name of 1.1 M characters (2.2 MB) failed the extract with
    ``ArrowInvalid: straddling object straddles two block boundaries``; a row larger than two blocks
    could not be parsed."""
    start, end = week_bounds(WEEK)
    with rolled_back.cursor() as cur:
        cur.execute(
            "UPDATE products SET name = repeat('é', 1100000) WHERE product_id = "
            "(SELECT product_id FROM transactions WHERE status = 'completed' AND \"timestamp\" >= %s "
            'AND "timestamp" < %s AND product_id IS NOT NULL LIMIT 1) RETURNING product_id',
            (start, end),
        )
        (giant,) = cur.fetchone()
    table = stream_week(rolled_back, start, end, block_size=64 * 1024)
    names = table.filter(pc.equal(table["product_id"], giant))["product_name"].to_pylist()
    assert names and set(names) == {"é" * 1_100_000}
    assert table.num_rows == stream_week(rolled_back, start, end).num_rows
    # Streamed into a file, the first attempt's rows are dropped when the stream starts again.
    sink = ParquetSink(tmp_path / "week.parquet", check=check_raw_batch)
    stream_week(rolled_back, start, end, block_size=64 * 1024, into=sink)
    written = sink.close().read()
    pd.testing.assert_frame_equal(written, to_raw_frame(table))


class _Recording(ParquetSink):
    """A file sink that notes how many rows each write brought and how many were on disk."""

    def __init__(self, path):
        super().__init__(path, check=check_raw_batch, group_rows=500)
        self.writes: list[tuple[int, int]] = []

    def write(self, batch):
        super().write(batch)
        self.writes.append((batch.num_rows, self.rows))


def test_the_week_streams_into_its_file_a_block_at_a_time(small_source, tmp_path):
    """With a file to stream into, the extract never holds the week: each block goes to the file as
    it arrives (rows on disk while the stream runs, no write larger than a block), and the file
    reads back as the same frame as the week read whole."""
    start, end = week_bounds(WEEK)
    with psycopg2.connect(small_source) as conn:
        whole = to_raw_frame(stream_week(conn, start, end))
        sink = _Recording(tmp_path / "week.parquet")
        assert stream_week(conn, start, end, block_size=16 * 1024, into=sink) is None
    assert len(sink.writes) > 5 and max(n for n, _ in sink.writes) < len(whole) / 5
    assert sink.writes[len(sink.writes) // 2][1] > 0  # on disk half-way through
    streamed = sink.close().read()
    RawTransactions.validate(streamed)
    pd.testing.assert_frame_equal(streamed, whole)


def test_a_copy_whose_reader_has_gone_ends_quietly(rolled_back):
    """The reading side stops early (it reads again with larger blocks, or met a bad value) and
    closes its end of the pipe: the COPY thread records the broken pipe for it and ends, instead of
    raising again when it closes its end (an unhandled exception in a thread, seen in CI)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader has gone
    errors: list[BaseException] = []
    _copy_into(
        rolled_back,
        "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 10000)) TO STDOUT",
        os.fdopen(write_fd, "wb"),
        errors,
    )
    assert len(errors) == 1 and isinstance(errors[0], BrokenPipeError)


def _lock_holder(dsn: str, table: str):
    """Another session holding ``table`` in ACCESS EXCLUSIVE mode until it is rolled back."""
    holder = psycopg2.connect(dsn)
    with holder.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return holder


def test_a_locked_source_table_fails_within_the_lock_timeout_naming_the_setting(
    pg_server, small_source
):
    """Issue 21, item 13: with ``transactions`` locked, the extract waited minutes with no log
    line."""
    from customer_assets.resources.postgres import SourceTimeoutError

    start, end = week_bounds(WEEK)
    holder = _lock_holder(small_source, "transactions")
    try:
        began = time.monotonic()
        with (
            pytest.raises(SourceTimeoutError) as raised,
            _source(pg_server, lock_timeout=1).connect() as conn,
        ):
            stream_week(conn, start, end)
        assert time.monotonic() - began < 10
    finally:
        holder.rollback()
        holder.close()
    message = raised.value.description
    assert "SOURCE_LOCK_TIMEOUT=1" in message and "\n" not in message and "lock" in message


def test_a_slow_query_fails_at_the_statement_timeout_naming_the_setting(pg_server, small_source):
    from customer_assets.resources.postgres import SourceTimeoutError

    with (
        pytest.raises(SourceTimeoutError) as raised,
        _source(pg_server, statement_timeout=1).connect() as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pg_sleep(5)")
    assert (
        "SOURCE_STATEMENT_TIMEOUT=1" in raised.value.description and not raised.value.allow_retries
    )


def test_progress_is_logged_while_the_stream_waits_and_runs(pg_server, small_source, caplog):
    """Issue 21, item 13: a stream held up by a lock (here on ``customers``, which the version query
    does not read) logs that it is waiting, then the rows read so far, through the logger it is
    given."""
    start, end = week_bounds(WEEK)
    holder = _lock_holder(small_source, "customers")
    release = threading.Timer(2.0, lambda: (holder.rollback(), holder.close()))
    release.start()
    logger = logging.getLogger("test_progress")
    with (
        caplog.at_level(logging.INFO, logger="test_progress"),
        _source(pg_server).connect() as conn,
    ):
        table = stream_week(conn, start, end, log=logger, progress_seconds=0.5)
    release.join()
    lines = [r.getMessage() for r in caplog.records if r.name == "test_progress"]
    assert any("no row yet" in line for line in lines), lines
    assert f"{table.num_rows:,} rows" in lines[-1], lines


def test_source_timeouts_are_settings_checked_when_resources_load(monkeypatch):
    from customer_assets.deployments import source_db_from_env
    from customer_assets.settings import source_timeouts_from_env

    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("SOURCE_STATEMENT_TIMEOUT", "600")
    monkeypatch.setenv("SOURCE_LOCK_TIMEOUT", "15")
    source = source_db_from_env("prod", "/tmp/unused", None)
    assert (source.statement_timeout, source.lock_timeout) == (600, 15)
    monkeypatch.delenv("SOURCE_STATEMENT_TIMEOUT")
    assert source_timeouts_from_env()["statement_timeout"] == 1800
    for value in ("abc", "0", "-5"):
        monkeypatch.setenv("SOURCE_LOCK_TIMEOUT", value)
        with pytest.raises(ValueError, match=f"SOURCE_LOCK_TIMEOUT={value!r}"):
            source_timeouts_from_env()


# Issue 26, item 3: the week's version on a second connection importing the extract's snapshot,
# alongside the COPY.


def _week_version_now(dsn, start, end) -> str:
    """The week's version as a fresh connection reads it: what the source holds at this moment."""
    from customer_assets.sources.extract import week_version

    with psycopg2.connect(dsn) as conn:
        version = week_version(conn, start, end)
    conn.close()
    return version


def _beside(source, conn, before=None, opened=None):
    """``connect_snapshot`` for ``stream_week_versioned``: ``source.connect_beside``, after running
    ``before`` (in the version's thread, once the extract's snapshot is exported and before the
    version query runs); ``opened`` receives the second connection and its server process id."""
    import contextlib

    @contextlib.contextmanager
    def connect(snapshot):
        if before is not None:
            before()
        with source.connect_beside(conn, snapshot) as other:
            if opened is not None:
                opened.append((other, other.info.backend_pid))
            yield other

    return connect


def _gone(dsn, pid, within=5.0) -> bool:
    """Whether the server's backend ``pid`` has ended (a closed connection's backend exits a moment
    later)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
            return True
        time.sleep(0.05)
    return False


def _version_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "week-version"]


def test_the_version_alongside_the_copy_is_week_version(pg_server, small_source):
    from customer_assets.sources.extract import stream_week_versioned, version_rows, week_version

    start, end = week_bounds(WEEK)
    source, opened = _source(pg_server), []
    with source.connect() as conn:
        schema = source.schema(conn)
        table, version = stream_week_versioned(
            conn, start, end, _beside(source, conn, opened=opened), schema
        )
        # today's version, on the extract's connection
        assert version == week_version(conn, start, end, schema)
        assert table.num_rows == stream_week(conn, start, end, schema=schema).num_rows
    assert version == _week_version_now(small_source, start, end)  # nothing changed meanwhile
    assert version_rows(version) == table.num_rows == _completed_in_week(small_source)
    ((other, pid),) = opened
    assert other.closed and not _version_threads() and _gone(small_source, pid)


@pytest.mark.parametrize(
    "imported", [True, False], ids=["snapshot-imported", "control-without-import"]
)
def test_the_version_describes_the_snapshot_the_rows_came_from(pg_server, small_source, imported):
    """A transaction commits a change to one of the week's rows after the extract's snapshot is
    taken and before the version query runs (in the version's thread, deterministically): rows and
    version are both of the state before it. The control opens the second connection without
    importing the snapshot, as a plain second connection would, and its version sees the change: the
    test tells the two apart."""
    import contextlib

    from customer_assets.sources.extract import stream_week_versioned, week_version

    start, end = week_bounds(WEEK)
    ((tid, amount),) = query(
        small_source,
        """SELECT transaction_id, amount::float8 FROM transactions
        WHERE status = 'completed' AND "timestamp" >= %s AND "timestamp" < %s AND transaction_id IS NOT NULL
          AND amount IS NOT NULL ORDER BY transaction_id LIMIT 1""",
        (start, end),
    )
    before = _week_version_now(small_source, start, end)
    committed = []

    def commit_a_change():
        query(
            small_source,
            "UPDATE transactions SET amount = amount + 1000 WHERE transaction_id = %s",
            (tid,),
        )
        committed.append(_week_version_now(small_source, start, end))

    source = _source(pg_server)
    try:
        with source.connect() as conn:
            schema = source.schema(conn)
            if imported:
                connect = _beside(source, conn, before=commit_a_change)
            else:

                @contextlib.contextmanager
                def connect(snapshot):
                    commit_a_change()
                    with source.connect() as other:  # a snapshot of its own, taken after the commit
                        yield other

            table, version = stream_week_versioned(conn, start, end, connect, schema)
            # the extract's snapshot: before the change
            assert week_version(conn, start, end, schema) == before
    finally:
        query(
            small_source,
            "UPDATE transactions SET amount = amount - 1000 WHERE transaction_id = %s",
            (tid,),
        )
    # the change was committed, and it changes the version
    assert committed and committed[0] != before
    assert table.filter(pc.equal(table["transaction_id"], tid))["amount"].to_pylist() == [
        amount
    ]  # rows: before
    assert version == (before if imported else committed[0])
    assert _week_version_now(small_source, start, end) == before  # the change was undone


def _waiting_on_transactions(dsn, at_least=1, within=10.0) -> list[int]:
    """The backends waiting for a lock on ``transactions`` (polled until there are ``at_least``)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = [
            pid
            for (pid,) in query(
                dsn,
                """SELECT pid FROM pg_locks WHERE NOT granted
                                               AND relation = 'transactions'::regclass""",
            )
        ]
        if len(pids) >= at_least:
            return pids
        time.sleep(0.05)
    raise AssertionError(
        f"fewer than {at_least} backend(s) came to wait for a lock on transactions"
    )


@pytest.fixture
def exclusive_request(small_source):
    """Another session asking for ``transactions`` in ACCESS EXCLUSIVE mode, in a thread: it waits
    behind the extract's transaction (which holds the table), and every later reader of the table
    waits behind it."""
    holder = psycopg2.connect(small_source)
    thread = threading.Thread(
        target=lambda: holder.cursor().execute(
            "SET lock_timeout = '60s'; LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE"
        ),
        daemon=True,
    )

    def request():
        thread.start()
        return _waiting_on_transactions(small_source)

    yield request
    if thread.ident:  # started: it holds the lock once the extract's transaction ended
        thread.join(60)
    holder.rollback()
    holder.close()


def test_a_lock_timeout_of_the_version_fails_the_extract_as_before_and_leaves_nothing(
    pg_server, small_source, exclusive_request
):
    """The version's query meets a lock (a migration asking for the table): the extract fails with
    today's ``SourceTimeoutError`` naming SOURCE_LOCK_TIMEOUT (retried), and no thread or connection
    is left behind."""
    from customer_assets.resources.postgres import SourceTimeoutError
    from customer_assets.sources.extract import stream_week_versioned

    start, end = week_bounds(WEEK)
    source, opened = _source(pg_server, lock_timeout=1), []
    began = time.monotonic()
    with pytest.raises(SourceTimeoutError) as raised, source.connect() as conn:
        schema = source.schema(conn)
        with conn.cursor() as cur:  # the extract's transaction holds the table, as its COPY would
            cur.execute("SELECT 1 FROM transactions LIMIT 1")
        stream_week_versioned(
            conn,
            start,
            end,
            _beside(source, conn, before=exclusive_request, opened=opened),
            schema,
        )
    assert time.monotonic() - began < 20
    message = raised.value.description
    assert (
        message.startswith("A source table stayed locked longer than SOURCE_LOCK_TIMEOUT=1 s")
        and "\n" not in message
    )
    assert raised.value.allow_retries is True
    ((other, pid),) = opened
    assert other.closed and not _version_threads() and _gone(small_source, pid)


def test_a_failed_extract_stops_the_version_and_closes_its_connection(
    pg_server, small_source, exclusive_request, monkeypatch
):
    """The COPY fails while the version's query waits for a lock (for up to a minute): the version
    is cancelled at once, its thread joined and its connection closed, and the extract's own error
    is raised."""
    from customer_assets.sources import extract as module

    start, end = week_bounds(WEEK)
    source, opened, pids = _source(pg_server, lock_timeout=60), [], []

    def failing_stream(*args, **kwargs):
        # the request, then the version, wait
        pids.extend(_waiting_on_transactions(small_source, at_least=2))
        raise RuntimeError("the COPY failed")

    monkeypatch.setattr(module, "stream_week", failing_stream)
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="the COPY failed"), source.connect() as conn:
        schema = source.schema(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM transactions LIMIT 1")
        module.stream_week_versioned(
            conn,
            start,
            end,
            _beside(source, conn, before=exclusive_request, opened=opened),
            schema,
        )
    assert time.monotonic() - began < 20
    ((other, pid),) = opened
    assert other.closed and not _version_threads() and _gone(small_source, pid)


def test_without_a_second_connection_the_version_is_computed_after_the_rows(
    pg_server, small_source, caplog
):
    """A second connection refused (too many connections, a server that does not know the snapshot):
    the week is still extracted, its version computed on the extract's connection in the same
    snapshot, with a warning."""
    import contextlib

    from customer_assets.sources.extract import stream_week_versioned, week_version

    @contextlib.contextmanager
    def refused(snapshot):
        raise psycopg2.OperationalError("FATAL:  sorry, too many clients already")
        yield

    start, end = week_bounds(WEEK)
    source = _source(pg_server)
    logger = logging.getLogger("test_fallback")
    with caplog.at_level(logging.WARNING, logger="test_fallback"), source.connect() as conn:
        schema = source.schema(conn)
        table, version = stream_week_versioned(conn, start, end, refused, schema, log=logger)
        assert (
            version
            == week_version(conn, start, end, schema)
            == _week_version_now(small_source, start, end)
        )
    assert table.num_rows == _completed_in_week(small_source) and not _version_threads()
    assert "too many clients" in caplog.text and "computed after the rows" in caplog.text
