"""The transactional outbox: notifications written with the decision that causes them, and
delivered afterwards by `services.notifications`.

A writer calls `enqueue` on its own connection, so a notification exists if and only if the
transaction that decided it committed. Delivery claims due rows (`due`) with a lease instead of
holding a transaction open across an HTTP call: two deliverers never claim the same row, and a
deliverer that dies mid-call leaves its rows due again once the lease runs out. Each attempt
ends in `mark_delivered` or `mark_failed` (attempts + 1, next try after a backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from storage import db

DEFAULT_LEASE = timedelta(seconds=60)

_CLAIM = """
UPDATE outbox SET next_attempt_at = %(now)s::timestamptz + %(lease)s
WHERE id IN (
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, topic, payload, attempts, created_at
"""


@dataclass(frozen=True)
class OutboxMessage:
    """One notification to deliver; `attempts` counts the tries before this one."""

    id: int
    topic: str
    payload: Any
    attempts: int
    created_at: datetime


def enqueue(
    topic: str, payload: Any, conn: db.Connection | None = None, *, now: datetime | None = None
) -> int:
    """Add a notification, due at `now`; on `conn` it commits (or not) with the caller's
    transaction. Every time the outbox compares comes from the callers' clock (default: this
    process's), never from the database server's `now()`."""
    now = now or datetime.now(UTC)
    with db.transaction(conn) as tx:
        row = tx.execute(
            "INSERT INTO outbox (topic, payload, created_at, next_attempt_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (topic, Jsonb(payload), now, now),
        ).fetchone()
    assert row is not None
    return int(row[0])


def due(
    limit: int, *, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
) -> list[OutboxMessage]:
    """Claim up to `limit` undelivered notifications whose time has come at `now`, oldest
    first.

    A claimed row is not due again until `lease` has passed: the caller must mark it
    delivered or failed before then (the lease must outlast the delivery attempts).
    """
    params = {"lease": lease, "limit": limit, "now": now or datetime.now(UTC)}
    with db.connection() as conn:
        rows = conn.execute(_CLAIM, params).fetchall()
    messages = [OutboxMessage(*row) for row in rows]
    return sorted(messages, key=lambda m: m.id)


def mark_delivered(message_id: int, now: datetime | None = None) -> None:
    """The notification was accepted by the receiver (at `now`): never deliver it again."""
    with db.connection() as conn:
        conn.execute(
            "UPDATE outbox SET delivered_at = %s, attempts = attempts + 1, last_error = NULL"
            " WHERE id = %s AND delivered_at IS NULL",
            (now or datetime.now(UTC), message_id),
        )


def mark_failed(
    message_id: int, error: str, retry_in: timedelta, now: datetime | None = None
) -> None:
    """The attempt failed: count it, keep the error, try again `retry_in` after `now`."""
    with db.connection() as conn:
        conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s,"
            " next_attempt_at = %s WHERE id = %s AND delivered_at IS NULL",
            (error[:2000], (now or datetime.now(UTC)) + retry_in, message_id),
        )


def pending_count() -> int:
    """Notifications not delivered yet (for ops and tests)."""
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
    return int(row[0]) if row else 0
