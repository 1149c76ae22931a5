"""A reading of the source beside the extract (the week's version, the source's findings): on a
second connection that imports the extract's snapshot, in a thread of its own, so that the extract
costs the longer of the two and not their sum (``extract.stream_week_alongside``).

Apart from ``extract.py`` because this is concurrency (a thread, a second connection, cancelling
its query), not what the extract or the reading beside it read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


def export_snapshot(conn) -> str:
    """The identifier of the snapshot ``conn``'s open REPEATABLE READ transaction reads: another
    connection to the same server imports it (``SET TRANSACTION SNAPSHOT``) while this transaction
    stays open."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_export_snapshot()")
        return cur.fetchone()[0]


class ReadBeside:
    """What ``compute`` reads (``extract.week_version``, the source's findings) in a thread of its
    own, on a connection that imports the extract's snapshot.

    ``unavailable`` holds why that connection could not be opened or could not import the snapshot
    (then the caller reads on its own connection); ``error`` a failure of the reading itself, as
    the connection's context manager classified it. ``stop`` cancels a query still
    running and joins: the thread never outlives the extract, and its connection is closed by
    then."""

    def __init__(self, connect_snapshot, snapshot: str, compute: Callable[[Any], Any]):
        self._connect, self._snapshot, self._compute = connect_snapshot, snapshot, compute
        self.value: Any = None  # what ``compute`` returned
        self.unavailable: BaseException | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._conn = None  # the connection while its query may run: what ``cancel`` interrupts
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="read-beside", daemon=True)

    def _run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                try:
                    other = stack.enter_context(self._connect(self._snapshot))
                # no second connection on the snapshot: not the reading's failure
                except Exception as exc:
                    self.unavailable = exc
                    return
                with self._lock:
                    if self._stopping:
                        return
                    self._conn = other
                try:
                    self.value = self._compute(other)
                finally:
                    # before the connection closes: ``cancel`` never meets a closed one
                    with self._lock:
                        self._conn = None
        except BaseException as exc:  # re-raised by ``result``
            self.error = exc

    def start(self) -> ReadBeside:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Interrupt the reading and wait for the thread (its connection is then closed). A cancel
        that reaches the server between two statements does nothing, so it is sent again until the
        thread has ended."""
        with self._lock:
            self._stopping = True
        while self._thread.is_alive():
            with self._lock:
                if self._conn is not None:
                    # the query may have ended meanwhile; the join below sees the thread end
                    with contextlib.suppress(Exception):
                        self._conn.cancel()
            self._thread.join(0.1)

    def result(self) -> Any:
        """What ``compute`` returned, or None when no second connection was had; raises its
        failure."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.value
