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

A leader that is frozen (SIGSTOP, a VM paused, a process stalled in swap) keeps its TCP
connection, so neither its death nor keepalives free the lock. Leadership is therefore a
*lease*: once it holds the lock, the leader's session sets `idle_session_timeout` to the lease
(PostgreSQL 14+), and the leader renews it by checking its session on every poll (every few
seconds, well inside the lease). A leader silent for a whole lease has its session ended by the
server, which releases the lock; a standby takes it at its next try. So a frozen leader is
replaced within `lease + the standby's poll interval`. When the frozen process resumes, its
first check finds the lease over, on its own clock before asking the server (the monotonic
clock keeps running while a process is stopped), and it steps down without acting.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from typing import Any

import psycopg

log = logging.getLogger(f"meterline.{__name__}")


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEDULER_LOCK = lock_key("meterline:scheduler")

#: How long a leader may go without renewing its lease before it is no longer the leader.
DEFAULT_LEASE_SECONDS = 15.0

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

    def __init__(
        self, url: str, *, key: int = SCHEDULER_LOCK, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        if lease_seconds < 1:
            raise ValueError(f"lease_seconds: {lease_seconds} is shorter than 1 s")
        self.url = url
        self.key = key
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._leading = False
        self._renewed_at = 0.0  # monotonic time of the last proof that the session was alive

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
            if self._leading:
                self._start_lease(self._conn)
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

    def _start_lease(self, conn: psycopg.Connection[Any]) -> None:
        """The server ends this session (and frees the lock) once it is idle for a lease."""
        lease_ms = int(self.lease_seconds * 1000)
        try:
            conn.execute("SELECT set_config('idle_session_timeout', %s, false)", (f"{lease_ms}ms",))
        except psycopg.errors.UndefinedObject:  # PostgreSQL before 14
            log.warning("leader election: no idle_session_timeout: a frozen leader is not bounded")
        self._renewed_at = time.monotonic()

    def _alive(self) -> bool:
        silent = time.monotonic() - self._renewed_at
        if silent > self.lease_seconds:
            # Frozen or stalled past the lease: the server may already have handed the lock on.
            log.warning("leader election: lease over (silent %.1fs); stepping down", silent)
            self._drop()
            return False
        try:
            assert self._conn is not None  # noqa: S101 (invariant for mypy, not validation)
            self._conn.execute("SELECT 1")
            self._renewed_at = time.monotonic()
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
