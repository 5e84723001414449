"""The transactional outbox: notifications written with the decision that causes them, and
delivered afterwards by `services.notifications`.

A writer calls `enqueue` on its own connection, so a notification exists if and only if the
transaction that decided it committed. A notification about a customer that has its own
webhook endpoint (`storage.catalog.webhooks`) becomes two rows in that one statement, one per
endpoint (`GLOBAL`: METER_WEBHOOK_URL, `CUSTOMER`: the customer's URL), so each delivery has
its own attempts, error and backoff. A notification with an idempotency key is written at most
once per endpoint, however often its writer runs.

Delivery claims due rows (`due`) with a lease instead of holding a transaction open across an
HTTP call: two deliverers never claim the same row, and a deliverer that dies mid-call leaves
its rows due again once the lease runs out. Each attempt ends in `mark_delivered` or
`mark_failed` (attempts + 1, next try after a backoff, or dead after the last one); `redeliver`
makes dead (or any undelivered) rows due again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage import db

DEFAULT_LEASE = timedelta(seconds=60)

#: The endpoints a row can be for.
GLOBAL = "global"
CUSTOMER = "customer"

# One row per endpoint: the global one always, the customer's own when it has one.
_INSERT = """
WITH targets (endpoint) AS (
    SELECT 'global'
    UNION ALL
    SELECT 'customer' FROM customer_webhooks WHERE customer_id = %(customer)s
)
INSERT INTO outbox (topic, payload, created_at, next_attempt_at, customer_id, endpoint,
    idempotency_key)
SELECT %(topic)s, %(payload)s, %(now)s, %(now)s, %(customer)s, endpoint, %(key)s FROM targets
ON CONFLICT (idempotency_key, endpoint) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, endpoint
"""

_CLAIM = """
UPDATE outbox SET next_attempt_at = %(now)s::timestamptz + %(lease)s
WHERE id IN (
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= %(now)s
      AND endpoint = ANY(%(endpoints)s)
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, topic, payload, attempts, created_at, customer_id, endpoint
"""

_LIST_COLUMNS = (
    "id, topic, customer_id, endpoint, attempts, last_error, created_at, next_attempt_at,"
    " delivered_at, dead_at, idempotency_key"
)


@dataclass(frozen=True)
class OutboxMessage:
    """One notification to deliver; `attempts` counts the tries before this one."""

    id: int
    topic: str
    payload: Any
    attempts: int
    created_at: datetime
    customer_id: str | None = None
    endpoint: str = GLOBAL


@dataclass(frozen=True)
class Notification:
    """One outbox row as ops sees it (`meter ops notifications`)."""

    id: int
    topic: str
    customer_id: str | None
    endpoint: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    idempotency_key: str | None

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return "delivered"
        return "dead" if self.dead_at is not None else "pending"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "customer_id": self.customer_id,
            "endpoint": self.endpoint,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "next_attempt_at": None
            if self.status != "pending"
            else self.next_attempt_at.isoformat(),
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "idempotency_key": self.idempotency_key,
        }


# Rows this thread has written (committed or not): the worker's prompt-delivery middleware
# reads it after each message, to send a delivery run at once instead of at the next sweep.
_written = threading.local()


def take_written() -> int:
    """How many rows this thread has written since the last call (and start counting anew)."""
    count: int = getattr(_written, "count", 0)
    _written.count = 0
    return count


def enqueue(
    topic: str,
    payload: Any,
    conn: db.Connection | None = None,
    *,
    now: datetime | None = None,
    customer_id: str | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Add a notification, due at `now`; on `conn` it commits (or not) with the caller's
    transaction. Returns the id of its row for the global endpoint (the existing row's, when
    `idempotency_key` was queued before).

    `customer_id` and `idempotency_key` default to the payload's `customer_id` (or `customer`)
    and `idempotency_key`. Every time the outbox compares comes from the callers' clock
    (default: this process's), never from the database server's `now()`."""
    if isinstance(payload, Mapping):
        customer = payload.get("customer_id", payload.get("customer"))
        customer_id = customer_id or (customer if isinstance(customer, str) else None)
        key = payload.get("idempotency_key")
        idempotency_key = idempotency_key or (key if isinstance(key, str) else None)
    params = {
        "topic": topic,
        "payload": Jsonb(payload),
        "now": now or datetime.now(UTC),
        "customer": customer_id,
        "key": idempotency_key,
    }
    with db.transaction(conn) as tx:
        rows = tx.execute(_INSERT, params).fetchall()
        _written.count = getattr(_written, "count", 0) + len(rows)
        ids = {endpoint: int(row_id) for row_id, endpoint in rows}
        if GLOBAL not in ids:  # queued before under this key
            found = tx.execute(
                "SELECT id FROM outbox WHERE idempotency_key = %s AND endpoint = 'global'",
                (idempotency_key,),
            ).fetchone()
            assert found is not None  # noqa: S101 (invariant for mypy, not validation)
            ids[GLOBAL] = int(found[0])
    return ids[GLOBAL]


# `_INSERT` for many notifications at once (each with its customer and idempotency key; the
# global row's id given, `global_ids`, when the caller took it from the sequence: `NEXT_ID`).
_INSERT_MANY = """
WITH items AS (
    SELECT i.topic, i.customer_id, i.key, i.id, p.payload, i.ord
    FROM unnest(%(topics)s::text[], %(customers)s::text[], %(keys)s::text[], %(ids)s::bigint[])
        WITH ORDINALITY AS i(topic, customer_id, key, id, ord)
    JOIN jsonb_array_elements(%(payloads)s::jsonb) WITH ORDINALITY AS p(payload, ord)
        USING (ord)
), targets AS (
    SELECT items.*, 'global' AS endpoint FROM items
    UNION ALL
    SELECT items.topic, items.customer_id, items.key, NULL, items.payload, items.ord, 'customer'
    FROM items JOIN customer_webhooks w USING (customer_id)
)
INSERT INTO outbox (id, topic, payload, created_at, next_attempt_at, customer_id, endpoint,
    idempotency_key)
SELECT coalesce(id, nextval('outbox_id_seq')), topic, payload, %(now)s, %(now)s, customer_id,
    endpoint, key
FROM targets
ORDER BY ord, endpoint DESC
ON CONFLICT (idempotency_key, endpoint) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, endpoint, idempotency_key
"""


def enqueue_many(
    items: Sequence[tuple[str, str | None, str, Any]],
    conn: db.Connection,
    *,
    now: datetime,
    global_ids: Sequence[int] | None = None,
) -> list[int]:
    """`enqueue` for many (topic, customer_id, idempotency_key, payload) in one statement on
    the caller's transaction (the same rows: one per endpoint, at most once per key); the ids
    of their global rows, in the order given. `global_ids`: the global rows' ids, taken from the
    outbox's sequence beforehand (`NEXT_ID`); a key queued before keeps its row and id."""
    if not items:
        return []
    params = {
        "topics": [topic for topic, _, _, _ in items],
        "customers": [customer for _, customer, _, _ in items],
        "keys": [key for _, _, key, _ in items],
        "ids": list(global_ids) if global_ids is not None else [None] * len(items),
        # One JSON document, not an array of them: far cheaper to send.
        "payloads": Jsonb([payload for _, _, _, payload in items]),
        "now": now,
    }
    with db.transaction(conn) as tx:
        rows = tx.execute(_INSERT_MANY, params).fetchall()
        _written.count = getattr(_written, "count", 0) + len(rows)
        ids = {key: int(row_id) for row_id, endpoint, key in rows if endpoint == GLOBAL}
        missing = [key for _, _, key, _ in items if key not in ids]
        if missing:  # queued before under these keys
            found = tx.execute(
                "SELECT idempotency_key, id FROM outbox"
                " WHERE idempotency_key = ANY(%s) AND endpoint = 'global'",
                (missing,),
            ).fetchall()
            ids.update({key: int(row_id) for key, row_id in found})
    return [ids[key] for _, _, key, _ in items]


#: SQL for the next id of the outbox's sequence (`enqueue_many`'s `ids`).
NEXT_ID = "nextval('outbox_id_seq')"


def due(
    limit: int,
    *,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
    endpoints: Sequence[str] = (GLOBAL, CUSTOMER),
) -> list[OutboxMessage]:
    """Claim up to `limit` undelivered, live notifications for `endpoints` whose time has come
    at `now`, oldest first.

    A claimed row is not due again until `lease` has passed: the caller must mark it
    delivered or failed before then (the lease must outlast the delivery attempts).
    """
    params = {
        "lease": lease,
        "limit": limit,
        "now": now or datetime.now(UTC),
        "endpoints": list(endpoints),
    }
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
    message_id: int,
    error: str,
    retry_in: timedelta,
    now: datetime | None = None,
    *,
    dead: bool = False,
) -> None:
    """The attempt failed: count it, keep the error, try again `retry_in` after `now` — or,
    when it was the last attempt (`dead`), never again until it is redelivered."""
    now = now or datetime.now(UTC)
    with db.connection() as conn:
        conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s,"
            " dead_at = CASE WHEN %s THEN %s::timestamptz END"
            " WHERE id = %s AND delivered_at IS NULL",
            (error[:2000], now + retry_in, dead, now, message_id),
        )


def redeliver(message_ids: Sequence[int] | None, now: datetime | None = None) -> list[int]:
    """Make notifications due at `now` with a fresh round of attempts: the given undelivered
    ones (dead or pending), or every dead one (`None`). Returns the ids made due; delivered
    rows are left alone."""
    params: dict[str, Any] = {"now": now or datetime.now(UTC), "ids": list(message_ids or [])}
    which = "dead_at IS NOT NULL" if message_ids is None else "id = ANY(%(ids)s)"
    with db.connection() as conn:
        rows = conn.execute(
            "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = %(now)s"  # noqa: S608 (constant SQL text; values are parameters)
            f" WHERE delivered_at IS NULL AND {which} RETURNING id",
            params,
        ).fetchall()
    _written.count = getattr(_written, "count", 0) + len(rows)
    return sorted(int(row[0]) for row in rows)


def list_notifications(
    *, dead_only: bool = False, include_delivered: bool = False, limit: int = 100
) -> list[Notification]:
    """Undelivered notifications (pending and dead), oldest first; only the dead ones with
    `dead_only`, delivered ones too with `include_delivered`."""
    if dead_only:
        where = "dead_at IS NOT NULL AND delivered_at IS NULL"
    elif include_delivered:
        where = "TRUE"
    else:
        where = "delivered_at IS NULL"
    with db.connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT {_LIST_COLUMNS} FROM outbox WHERE {where} ORDER BY id LIMIT %s",  # noqa: S608 (constant SQL text; values are parameters)
                (limit,),
            )
            .fetchall()
        )
    return [Notification(**row) for row in rows]


def existing_ids(message_ids: Sequence[int]) -> set[int]:
    """Which of `message_ids` are outbox rows."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id FROM outbox WHERE id = ANY(%s)", (list(message_ids),)
        ).fetchall()
    return {int(row[0]) for row in rows}


def pending_count() -> int:
    """Notifications not delivered yet and not dead (for ops and tests)."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
        ).fetchone()
    return int(row[0]) if row else 0
