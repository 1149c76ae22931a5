"""The DuckDB warehouse file opened within a bounded wait for its lock (quoting and the in-memory
connection over frames are pure, in ``logic/duckdb_memory.py``)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb

from customer_assets.errors import first_line

DEFAULT_LOCK_TIMEOUT_SECONDS = 60


class WarehouseLocked(dg.Failure):
    """Another process holds the DuckDB file (DuckDB allows one writer, and a writer excludes every
    reader)."""

    def __init__(self, database: str, waited: float, message: str):
        holder = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", message)
        who = f"{holder.group(1)} (PID {holder.group(2)})" if holder else "another process"
        super().__init__(
            description=f"The warehouse {database} is locked by {who}; waited {waited:.0f} s "
            "(WAREHOUSE_LOCK_TIMEOUT). DuckDB allows one process at a time on the file, readers included: close "
            "that connection (readers belong on the copy published after each week, WAREHOUSE_READ_COPY_PATH, "
            f"unless it is off), then re-run the week. [{first_line(None, message)}]",
            metadata={"lock_holder": who},
            allow_retries=False,
        )


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def file_lock(database: str) -> threading.RLock:
    """The process's lock on the file: held while a connection to it is open.

    The local deployment runs a week's steps on threads of one process (``step_threads.py``). In one
    process DuckDB shares the file between connections, so two steps' statements could interleave:
    a DDL statement of one conflicting with another's, the copy published for analysts taken while
    another step writes. The lock keeps the warehouse to one step at a time, as when the steps ran
    one after the other, while work outside it (the source, files, pandas) runs at once. Reentrant:
    a step may open a second connection while it holds one."""
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(_key(database), threading.RLock())


def _key(database: str) -> str:
    """One name per file, however the path is spelled."""
    return str(Path(database).resolve())


# the running step's connections kept open, by file (``step_connections``)
_STEP = threading.local()
# How long a step's connection to the file stays open unused: the file is released to other
# processes in any longer pause (the source's COPY, pandas work), and reopened at the next use.
ANCHOR_IDLE_SECONDS = 1.0


class _Anchor:
    """A step's open connection to one file, closed once unused ``ANCHOR_IDLE_SECONDS``."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.last_used = time.monotonic()
        self.timer: threading.Timer | None = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        # the WAL stays for the next open should the checkpoint at close fail (a full disk): what
        # was written is committed
        with contextlib.suppress(duckdb.Error):
            self.con.close()


@contextlib.contextmanager
def step_connections() -> Iterator[None]:
    """While a step runs on this thread, its connection to a warehouse file is kept open between
    uses that follow each other (within ``ANCHOR_IDLE_SECONDS``), and each use takes a cursor of it
    (``step_anchor``), instead of opening the file each time. Opening it costs about 15 ms, and
    DuckDB checkpoints when the last connection to a file closes (15 ms more after a write); a
    default-scale week opened it 98 times. The file is released in any pause longer than that and
    when the step ends, so another process (another week's run, an erasure) waits for a burst of
    statements, not for a step or the run. The local executor runs each step in one
    (``step_threads.py``)."""
    previous = getattr(_STEP, "anchors", None)
    anchors: dict[str, _Anchor] = {}
    _STEP.anchors = anchors
    try:
        yield
    finally:
        _STEP.anchors = previous
        for database in list(anchors):
            with file_lock(database):
                anchor = anchors.pop(database, None)
                if anchor is not None:
                    anchor.close()


def step_anchor(
    database: str, connect: Callable[[], duckdb.DuckDBPyConnection]
) -> duckdb.DuckDBPyConnection | None:
    """The running step's connection to ``database``, opened by ``connect`` if it is not open; None
    outside ``step_connections``. Take a cursor of it for each use (a cursor is a connection of its
    own, with its own transaction, to the file already open), and call ``anchor_used`` after it.
    Call both with ``file_lock(database)`` held."""
    anchors = getattr(_STEP, "anchors", None)
    if anchors is None:
        return None
    key = _key(database)
    if key not in anchors:
        anchors[key] = _Anchor(connect())
    return anchors[key].con


def anchor_used(database: str) -> None:
    """A use of the step's connection to ``database`` ended: it closes once unused for
    ``ANCHOR_IDLE_SECONDS``."""
    anchors, key = getattr(_STEP, "anchors", None), _key(database)
    anchor = anchors.get(key) if anchors is not None else None
    if anchor is None:
        return
    anchor.last_used = time.monotonic()
    if anchor.timer is None:
        _close_when_idle(anchors, key, anchor, ANCHOR_IDLE_SECONDS)


def _close_when_idle(anchors: dict, key: str, anchor: _Anchor, after: float) -> None:
    def check() -> None:
        with file_lock(key):  # never while a use holds it
            if anchors.get(key) is not anchor:
                return  # the step ended and closed it
            idle = time.monotonic() - anchor.last_used
            if idle < ANCHOR_IDLE_SECONDS:  # used since: look again when it may be idle
                _close_when_idle(anchors, key, anchor, ANCHOR_IDLE_SECONDS - idle)
                return
            del anchors[key]
            anchor.timer = None
            anchor.close()

    anchor.timer = threading.Timer(after, check)
    anchor.timer.daemon = True
    anchor.timer.start()


def connect_waiting(
    database: str, timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """The file opened for writing, waiting at most ``timeout_seconds`` for another process's lock,
    in UTC.

    dagster-duckdb's own connections retry a lock ten times with a growing backoff (minutes in all)
    and then fail with DuckDB's message; here the wait is bounded and the failure names the holder
    and what to do."""
    started, delay = time.monotonic(), 0.1
    while True:
        try:
            con = duckdb.connect(
                database, read_only=read_only, config={"custom_user_agent": "customer_assets"}
            )
            con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.IOException as exc:
            waited = time.monotonic() - started
            if "lock" not in str(exc).lower():
                raise
            if waited + delay > timeout_seconds:
                raise WarehouseLocked(database, waited, str(exc)) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``target`` made a copy of ``source`` (replaced if it exists), by the kernel's
    ``copy_file_range``: on a filesystem that shares blocks (XFS, btrfs, and NFS server-side) the
    copy is a reflink, taken in constant time and space whatever the file's size, its blocks copied
    only when one of the files is written later; elsewhere the kernel copies the bytes without
    bringing them into the process. Where it cannot (another filesystem, another OS), the bytes are
    copied (``shutil.copyfile``)."""
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            remaining = os.fstat(src.fileno()).st_size
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
                if copied == 0:  # the source shrank under us: a copy of what it holds now
                    break
                remaining -= copied
        return
    except (AttributeError, OSError) as exc:  # no copy_file_range here, or not between these
        if isinstance(exc, OSError) and exc.errno not in _NO_RANGE_COPY:
            raise
    shutil.copyfile(source, target)


# what copy_file_range answers where it cannot copy these two files (a plain copy can)
_NO_RANGE_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class ReadCopyFailed(dg.Failure):
    """The analysts' copy of the local warehouse could not be published; the warehouse itself
    holds the week. Not retried: a full disk stays full."""

    def __init__(self, target: Path, dropped: bool, exc: Exception):
        before = (
            "The copy published before was removed: it still held the customers just erased."
            if dropped
            else "Analysts keep reading the copy published before, a week behind."
        )
        super().__init__(
            description=f"The analysts' copy of the warehouse could not be published at {target}: "
            f"{first_line(exc)}. "
            "The warehouse holds the week; no partial copy was left. "
            f"{before} Free space on that disk (the copy takes the warehouse's size on ext4, "
            "nothing on XFS or btrfs) or point WAREHOUSE_READ_COPY_PATH at another; re-running "
            "the week, or the next one, publishes the copy.",
            allow_retries=False,
        )
