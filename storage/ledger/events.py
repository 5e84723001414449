"""The usage-event ledger: durable, deduplicated, partitioned by month.

`event_ids` holds one row per customer × event id over the accepted window, so a resend is
caught even when its timestamp differs; `usage_events` holds the events themselves, partitioned
by the month of their timestamp. Both are written by one statement per batch: the array
parameters are unnested server-side (one round trip, no per-event statements).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from pricing.events import Event, EventLike
from storage import db

_INSERT = """
WITH input AS (
    SELECT * FROM unnest(
        %(customer_id)b::text[], %(event_id)b::text[], %(metric)b::text[],
        %(quantity)b::numeric[], %(ts)b::timestamptz[], %(properties)b::text[]
    ) AS t(customer_id, event_id, metric, quantity, timestamp, properties)
), fresh AS (
    INSERT INTO event_ids (customer_id, event_id, timestamp, received_at)
    SELECT customer_id, event_id, timestamp, %(received_at)s FROM input
    ON CONFLICT DO NOTHING
    RETURNING customer_id, event_id
)
INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp, properties, batch_id)
SELECT i.customer_id, i.event_id, i.metric, i.quantity, i.timestamp, i.properties::jsonb,
       %(batch_id)s
FROM input i JOIN fresh f USING (customer_id, event_id)
RETURNING customer_id, event_id
"""

_known_months: set[tuple[int, int]] = set()
_months_lock = threading.Lock()
db.register_cache(_known_months.clear)


def _month(ts: datetime) -> tuple[int, int]:
    utc = ts.astimezone(UTC)
    return utc.year, utc.month


def ensure_months(events: Sequence[EventLike]) -> None:
    """Create the monthly partitions these events need, once per process, outside the batch's
    transaction (partition DDL locks the parent table)."""
    # Decoded timestamps are in UTC already: their year and month need no conversion.
    needed = {
        (ts.year, ts.month) if ts.tzinfo is UTC else _month(ts)
        for ts in (e.timestamp for e in events)
    } - _known_months
    if not needed:
        return
    with _months_lock:
        needed -= _known_months
        if not needed:
            return
        with db.connection() as conn:
            for year, month in sorted(needed):
                start = datetime(year, month, 1, tzinfo=UTC)
                db.ensure_ledger_partitions(conn, start, start)
        _known_months.update(needed)


def insert_events(
    conn: psycopg.Connection[Any],
    batch_id: str,
    events: Sequence[EventLike],
    *,
    received_at: datetime | None = None,
) -> set[tuple[str, str]]:
    """Insert events not seen before; return the (customer_id, event_id) pairs inserted.

    `events` must not repeat a (customer_id, event_id) pair: the caller drops in-batch repeats.
    `received_at` (default now) is the instant the accepted window was checked against; the
    dedup index is pruned by it, so it comes from the same clock, not from the server's.
    """
    if not events:
        return set()
    params = {
        "customer_id": [e.customer_id for e in events],
        "event_id": [e.event_id for e in events],
        "metric": [e.metric for e in events],
        "quantity": [e.quantity for e in events],
        "ts": [e.timestamp for e in events],
        "properties": [json.dumps(e.properties) if e.properties else None for e in events],
        "batch_id": batch_id,
        "received_at": received_at or datetime.now(UTC),
    }
    rows = conn.execute(_INSERT, params).fetchall()
    return {(row[0], row[1]) for row in rows}


def count_events(customer_id: str, start: datetime, end: datetime) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM usage_events WHERE customer_id = %s"
            " AND timestamp >= %s AND timestamp < %s",
            (customer_id, start, end),
        ).fetchone()
    return int(row[0]) if row else 0


# The columns `event_from_row` reads, and the query every ledger event read starts from.
SELECT_EVENTS = (
    "SELECT event_id, customer_id, metric, quantity, timestamp, properties"
    " FROM usage_events WHERE customer_id = %s"
)


def event_from_row(row: tuple[Any, ...]) -> Event:
    """A ledger row selected by `SELECT_EVENTS`, as the contract's event."""
    return Event(
        event_id=row[0],
        customer_id=row[1],
        metric=row[2],
        quantity=row[3],
        timestamp=row[4],
        properties=row[5] or {},
    )


def events_between(customer_id: str, start: datetime, end: datetime) -> list[Event]:
    """The customer's events in [start, end), in time order (for offline re-rating and checks)."""
    with db.connection() as conn:
        rows = conn.execute(
            SELECT_EVENTS + " AND timestamp >= %s AND timestamp < %s ORDER BY timestamp, event_id",
            (customer_id, start, end),
        ).fetchall()
    return [event_from_row(r) for r in rows]
