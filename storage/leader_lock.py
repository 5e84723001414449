"""Leader election through a PostgreSQL session-level advisory lock (used by `scheduler/`).

APScheduler 3 cannot share a job store between processes, so two schedulers would both fire
every job. Instead each scheduler process tries `pg_try_advisory_lock` on a dedicated
connection: the one that gets it leads and keeps that connection open; the others stay on
standby and try again every few seconds. PostgreSQL releases a session lock when its session
ends, so when the leader dies (or its connection drops, or is terminated) a standby gets the
lock on its next try. The leader checks its connection before every job and on every poll: a
leader that cannot reach its session can no longer be sure it holds the lock, so it steps down.

TCP keepalives (both ends) bound how long a leader cut off by the network keeps the lock on the
server side; the statement timeout bounds how long a check can hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from typing import Any

import psycopg

log = logging.getLogger(f"meterline.{__name__}")


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEDULER_LOCK = lock_key("meterline:scheduler")

_CONNECT_ARGS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    "application_name": "meterline-scheduler",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": (
        "-c statement_timeout=5000 -c tcp_keepalives_idle=10"
        " -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    ),
}


class LeaderElection:
    """One contender for the lock `key` in the database at `url`.

    `try_acquire()` on standby, `check()` while leading, `release()` on shutdown. Thread-safe:
    the scheduler's job threads check leadership while the main loop polls.
    """

    def __init__(self, url: str, *, key: int = SCHEDULER_LOCK) -> None:
        self.url = url
        self.key = key
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._leading = False

    @property
    def is_leader(self) -> bool:
        """Whether this contender held the lock at its last acquire or check."""
        return self._leading

    @property
    def backend_pid(self) -> int | None:
        """The server process of the session holding (or trying for) the lock."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this contender leads (now or already)."""
        with self._lock:
            if self._leading:
                return self._alive()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url, **_CONNECT_ARGS)
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            except psycopg.Error as exc:
                log.warning("leader election: cannot reach PostgreSQL: %s", exc)
                self._drop()
                return False
            self._leading = bool(row and row[0])
            return self._leading

    def check(self) -> bool:
        """While leading: is the session that holds the lock still there? On any doubt the
        connection is dropped (releasing the lock if the server still has it) and this
        contender is on standby."""
        with self._lock:
            return self._leading and self._alive()

    def release(self) -> None:
        """Give up the lock (if held) and close the connection."""
        with self._lock:
            if self._leading and self._conn is not None and not self._conn.closed:
                # On failure, closing the session below releases the lock all the same.
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._drop()

    def _alive(self) -> bool:
        try:
            assert self._conn is not None  # noqa: S101 (invariant for mypy, not validation)
            self._conn.execute("SELECT 1")
            return True
        except (psycopg.Error, AssertionError) as exc:
            log.warning("leader election: lost the leader's session: %s", exc)
            self._drop()
            return False

    def _drop(self) -> None:
        self._leading = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
