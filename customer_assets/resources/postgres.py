"""The source PostgreSQL: a configured server (read replica preferred) or an embedded local one."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator

import dagster as dg
import psycopg2
import psycopg2.errors
from pydantic import Field, PrivateAttr

from customer_assets.errors import first_line
from customer_assets.sources.source_schema import REQUIRED, SourceSchema, read_source_schema

log = logging.getLogger(__name__)


class SourcePermissionError(dg.Failure):
    """The database user may not read what the extract needs: stop, do not retry or work around
    it."""


class SourceConnectionError(dg.Failure):
    """The source refused this login for good (credentials, pg_hba rules, a missing database or
    role): no retry can fix it, so the step fails at once with what to change."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


# libpq's messages (patterns) for refusals that no retry fixes, and what the operator should do
# about each.
_PERMANENT_REFUSALS = (
    (r"password authentication failed", "check DB_USER and DB_PASSWORD"),
    (r"no password supplied", "set DB_PASSWORD"),
    (
        r"no pg_hba\.conf entry",
        "the server's pg_hba.conf admits no such host, user and database: ask its "
        "administrator, or check DB_HOST, DB_USER and DB_NAME",
    ),
    (
        r"pg_hba\.conf rejects connection",
        "the server's pg_hba.conf rejects this host or user: ask its administrator",
    ),
    (r'database "[^"]*" does not exist', "check DB_NAME"),
    (r'role "[^"]*" does not exist', "check DB_USER"),
    (
        r"permission denied for database",
        "the user may not connect to the database: GRANT CONNECT, or check DB_USER",
    ),
    (r"is not permitted to log in", "the role may not log in: ask the server's administrator"),
    (r"certificate", "check the TLS settings of the connection (PGSSLMODE, PGSSLROOTCERT)"),
)


def permanent_refusal(
    exc: psycopg2.OperationalError, host: str, user: str | None, dbname: str
) -> SourceConnectionError | None:
    """The one-line failure for a connection error that retrying cannot fix, or None for a transient
    one (refused or reset connections, timeouts, a server starting or shutting down)."""
    first = first_line(exc)
    for pattern, advice in _PERMANENT_REFUSALS:
        if re.search(pattern, str(exc), flags=re.IGNORECASE):
            return SourceConnectionError(
                f"The source PostgreSQL {host} refused user {user!r} on database {dbname!r}: {advice}. "
                f"Not retried. [{first}]"
            )
    return None


class SourceTimeoutError(dg.Failure):
    """A source query ran out of its time: waiting for a lock (retried: locks are released) or
    running longer than the statement timeout (not retried: it would run as long again)."""


def timeout_failure(
    exc: psycopg2.Error, statement_timeout: int, lock_timeout: int
) -> SourceTimeoutError | None:
    """The one-line failure naming the setting, for a query the server cancelled on a timeout; else
    None."""
    first = first_line(exc)
    if isinstance(exc, psycopg2.errors.LockNotAvailable):
        return SourceTimeoutError(
            description=f"A source table stayed locked longer than SOURCE_LOCK_TIMEOUT={lock_timeout} s (another "
            f"session holds a lock on it: a migration, a LOCK TABLE, a long write); retried. [{first}]",
            allow_retries=True,
        )
    if isinstance(exc, psycopg2.errors.QueryCanceled) and "statement timeout" in str(exc):
        return SourceTimeoutError(
            description=f"A source query ran longer than SOURCE_STATEMENT_TIMEOUT={statement_timeout} s and was "
            f"cancelled: raise the setting, or check the source's load and its index on transactions.timestamp; "
            f"not retried. [{first}]",
            allow_retries=False,
        )
    return None


class PostgresSource(dg.ConfigurableResource):
    """The production PostgreSQL that holds customers, transactions and products (a read replica
    preferred).

    The embedded demo server is a subclass in ``customer_assets/demo/embedded.py``, which the
    deployment switch picks when no DB_HOST is set: nothing here knows about it.
    """

    host: str | None = Field(default=None, description="Primary host (DB_HOST).")
    read_host: str | None = Field(
        default=None, description="Read replica (DB_READ_HOST), preferred."
    )
    port: int = Field(default=5432, description="DB_PORT")
    dbname: str = Field(default="production", description="DB_NAME")
    user: str | None = Field(default=None, description="DB_USER")
    password: str | None = Field(default=None, description="DB_PASSWORD")
    connect_timeout: int = Field(default=30, description="Seconds to wait for a connection.")
    timezone: str = Field(
        default="UTC", description="SOURCE_TIMEZONE: the zone of naive timestamp columns."
    )
    statement_timeout: int = Field(
        default=1800,
        description="SOURCE_STATEMENT_TIMEOUT: seconds a source query "
        "may run before the server cancels it.",
    )
    lock_timeout: int = Field(
        default=120,
        description="SOURCE_LOCK_TIMEOUT: seconds a source query may wait for "
        "a lock on a table (held by a migration, say) before the server cancels it.",
    )

    # per thread: the run's steps run on threads at once, each reporting its own connection's route
    _routes: threading.local = PrivateAttr(default_factory=threading.local)

    @property
    def description(self) -> str:
        """What the source is, for metadata."""
        return "PostgreSQL"

    def schema(self, conn, tables: tuple[str, ...] = tuple(REQUIRED)) -> SourceSchema:
        """The source tables' checked column types (fails at once, naming table and column, if
        unusable)."""
        return read_source_schema(conn, self.timezone, tables)

    def _connect_host(self, host: str) -> psycopg2.extensions.connection:
        try:
            return psycopg2.connect(
                host=host,
                port=self.port,
                dbname=self.dbname,
                user=self.user,
                password=self.password,
                connect_timeout=self.connect_timeout,
                application_name="customer_assets",
            )
        except psycopg2.OperationalError as exc:
            refusal = permanent_refusal(exc, host, self.user, self.dbname)
            if refusal is not None:
                raise refusal from exc
            raise

    def open(self, logger) -> psycopg2.extensions.connection:
        """A connection to the replica when it answers, else to the primary (``route`` says
        which); not yet set up: hand it to ``session``."""
        if self.read_host:
            try:
                conn = self._connect_host(self.read_host)
                self._routes.last = f"replica {self.read_host}"
                return conn
            except (psycopg2.OperationalError, SourceConnectionError) as exc:
                reason = first_line(exc)
                self._routes.last = (
                    f"primary {self.host} (replica {self.read_host} refused: {reason})"
                )
                logger.warning(
                    f"read replica {self.read_host} refused the connection ({reason}); "
                    f"falling back to the primary {self.host}"
                )
                return self._connect_host(self.host)
        self._routes.last = f"primary {self.host}"
        return self._connect_host(self.host)

    @property
    def route(self) -> str:
        """Where this thread's last connection went: ``primary``, ``replica``, ``embedded``, or the
        fallback and why."""
        return getattr(self._routes, "last", None) or "not connected"

    def _open_beside(self, conn) -> psycopg2.extensions.connection:
        """A second connection to the very server, database and user ``conn`` is connected to (the
        replica it reached, say, not the primary): a snapshot exported there can be imported only
        there. Its other parameters (timeouts, TLS, application name) are ``conn``'s."""
        info = conn.info
        params = {
            key: value
            for key, value in psycopg2.extensions.parse_dsn(conn.dsn).items()
            if key != "password"
        }
        params.update(host=info.host, port=info.port, dbname=info.dbname, user=info.user)
        if info.password:  # ``conn.dsn`` masks it
            params["password"] = info.password
        try:
            return psycopg2.connect(**params)
        except psycopg2.OperationalError as exc:
            refusal = permanent_refusal(exc, info.host, info.user, info.dbname)
            if refusal is not None:
                raise refusal from exc
            raise

    @contextlib.contextmanager
    def connect(
        self, logger: logging.Logger | None = None
    ) -> Iterator[psycopg2.extensions.connection]:
        """A read-only connection in UTC: the replica when it answers, else the primary.

        ``logger`` (a step's ``context.log``) receives the fallback warning, so it is in the run's
        event log; the route taken is in ``route`` for the step's metadata. Every query on it is
        bounded by the statement and lock timeouts, and a query cancelled by one fails with
        ``SourceTimeoutError`` naming the setting.
        """
        with self.session(self.open(logger or log)) as conn:
            yield conn

    @contextlib.contextmanager
    def connect_beside(self, conn, snapshot: str) -> Iterator[psycopg2.extensions.connection]:
        """A second connection reading the snapshot ``snapshot`` that ``conn``'s open transaction
        exported (``SELECT pg_export_snapshot()``): to the same server, with the settings of
        ``connect`` (read-only, UTC, the statement and lock timeouts) and its failures
        (``SourceTimeoutError``...). Its queries see exactly what ``conn``'s see, however long after
        they run. ``route`` is left as ``conn`` set it."""
        with self.session(self._open_beside(conn), snapshot) as other:
            yield other

    @contextlib.contextmanager
    def session(
        self, conn, snapshot: str | None = None
    ) -> Iterator[psycopg2.extensions.connection]:
        """``conn`` set up as the pipeline reads the source, closed on leaving; its failures
        classified."""
        try:
            # One snapshot per connection (one transaction, REPEATABLE READ), taken by its first
            # query below or imported: a week's version and its rows are read from the same state.
            conn.set_session(
                readonly=True,
                autocommit=False,
                isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
            )
            with conn.cursor() as cur:
                # before any query of the transaction, as PostgreSQL requires
                if snapshot is not None:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                cur.execute("SET TIME ZONE 'UTC'")
                cur.execute(
                    "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
                    (f"{self.statement_timeout}s", f"{self.lock_timeout}s"),
                )
            yield conn
        except (psycopg2.errors.LockNotAvailable, psycopg2.errors.QueryCanceled) as exc:
            timeout = timeout_failure(exc, self.statement_timeout, self.lock_timeout)
            if timeout is None:
                raise
            raise timeout from exc
        except psycopg2.errors.InsufficientPrivilege as exc:
            raise SourcePermissionError(
                description=f"Permission denied on the source database for user {self.user!r}: "
                f"{first_line(exc)}. Grant SELECT on customers, transactions and products; "
                "the pipeline does not retry or work around missing permissions.",
                allow_retries=False,
            ) from exc
        finally:
            conn.close()
