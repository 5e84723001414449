"""The PostgreSQL connection pool: one per process, created on first use.

First use checks that the schema is this release's: with METER_AUTO_MIGRATE (the default for the
embedded PostgreSQL) it applies the pending migrations (`storage.migrate`), otherwise a database
that is behind is refused with `SchemaNotMigrated` (run `meter db migrate` once per release).
It also makes sure the ledger has its monthly partitions around the current month.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from storage.embedded import database_url
from storage.errors import SchemaNotMigrated
from storage.migrate import migrate, pending
from storage.settings import get_settings

logger = logging.getLogger(f"meterline.{__name__}")

Connection = psycopg.Connection[Any]

# Months on each side of the current one whose ledger partitions exist from startup on.
_PARTITION_MONTHS_AROUND_NOW = 2

_lock = threading.Lock()
_pool: ConnectionPool[Connection] | None = None
_checked: set[str] = set()  # URLs whose schema this process migrated or found current
# Pools inherited across a fork: never used, never closed (closing would end the parent's
# sessions, which share the sockets), only kept referenced so garbage collection leaves them be.
_inherited: list[object] = []
_cache_clearers: list[Callable[[], None]] = []


def pool() -> ConnectionPool[Connection]:
    """The process's connection pool, opened on first call (the schema migrated or checked)."""
    global _pool
    current = _pool
    if current is not None:
        return current
    with _lock:
        if _pool is None:
            url = database_url()
            if url not in _checked:
                # One direct connection first: an unreachable server fails here at once, where
                # the pool would keep retrying until its timeout.
                if get_settings().auto_migrate:
                    migrate(url)
                else:
                    _check_schema(url)
                _checked.add(url)
            _pool = _open_pool(url)
            _ensure_partitions_around_now(_pool)
        return _pool


def _check_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        missing = pending(conn)
    if missing:
        raise SchemaNotMigrated(
            "database",
            f"schema is not migrated ({len(missing)} pending, from {missing[0]}):"
            " run `meter db migrate` (or set METER_AUTO_MIGRATE=1)",
        )


def _open_pool(url: str) -> ConnectionPool[Connection]:
    new_pool: ConnectionPool[Connection] = ConnectionPool(
        url,
        min_size=1,
        max_size=get_settings().METER_POOL_MAX,
        # Sessions in UTC: timestamps come back as aware UTC datetimes whatever the server's
        # TimeZone, and date arithmetic in SQL does not depend on where the server runs.
        kwargs={"options": "-c TimeZone=UTC", "application_name": "meterline"},
        # A connection checked out after a server restart is replaced instead of failing.
        check=ConnectionPool.check_connection,
        name="meterline",
        open=False,
    )
    new_pool.open(wait=True, timeout=30)
    return new_pool


def _ensure_partitions_around_now(target: ConnectionPool[Connection]) -> None:
    now = datetime.now(UTC)
    months = _PARTITION_MONTHS_AROUND_NOW
    start_month = (now.year * 12 + now.month - 1) - months
    end_month = (now.year * 12 + now.month - 1) + months
    start = datetime(start_month // 12, start_month % 12 + 1, 1, tzinfo=UTC)
    end = datetime(end_month // 12, end_month % 12 + 1, 1, tzinfo=UTC)
    with target.connection() as conn:
        ensure_ledger_partitions(conn, start, end)


@contextmanager
def connection() -> Iterator[Connection]:
    """A pooled connection for one transaction: committed on success, rolled back on error."""
    with pool().connection() as conn:
        yield conn


@contextmanager
def transaction(conn: Connection | None = None) -> Iterator[Connection]:
    """Run a repository call inside the caller's transaction on `conn`, or on its own.

    Repository functions take an optional `conn` so that a caller can make their writes part of
    its own transaction, which the caller commits or rolls back; without one they commit on
    their own. On `conn`: a savepoint if a transaction is open, the caller's implicit
    transaction if none is open yet, a transaction of its own if `conn` is in autocommit.
    """
    if conn is None:
        with connection() as pooled:
            yield pooled
    elif conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with conn.transaction():
            yield conn
    else:
        # psycopg would commit a transaction() block opened on an idle connection; here the
        # first statement opens the caller's transaction instead, and the caller ends it.
        yield conn


def ensure_ledger_partitions(conn: Connection, start: datetime, end: datetime) -> list[str]:
    """Create the monthly ledger partitions for every month from `start`'s to `end`'s (UTC).

    Idempotent and safe under concurrency; returns the partitions it created. Events already in
    the default partition for those months are moved into the new partition. Call it in a short
    transaction of its own, before inserting: creating a partition locks the default partition.
    """
    rows = conn.execute(
        "SELECT created FROM ensure_usage_events_partitions(%s, %s) AS created", (start, end)
    ).fetchall()
    return [row[0] for row in rows]


def close_pool() -> None:
    """Close the pool (tests, shutdown); the next `pool()` opens a new one."""
    global _pool
    with _lock:
        current, _pool = _pool, None
    if current is not None:
        current.close()


def register_cache(clear: Callable[[], None]) -> None:
    """Register the `clear` function of an in-process cache of database rows.

    `clear_caches()` calls them all: tests do after truncating the tables, so a cache never
    serves a row from a previous test.
    """
    if clear not in _cache_clearers:
        _cache_clearers.append(clear)


def clear_caches() -> None:
    """Empty every cache registered with `register_cache`."""
    for clear in list(_cache_clearers):
        clear()


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's pool without touching its connections."""
    global _pool, _lock
    if _pool is not None:
        _inherited.append(_pool)
    _pool = None
    _lock = threading.Lock()  # the parent may have held it while forking


os.register_at_fork(after_in_child=_forget_after_fork)
