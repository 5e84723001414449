"""The ledger events of one customer from a moment on, read in the transaction that changes
the customer's subscription history (`services.rerate` derives its rollups again from them)."""

from __future__ import annotations

from datetime import datetime

from pricing.events import Event
from storage import db
from storage.ledger.events import SELECT_EVENTS, event_from_row


def has_events_since(conn: db.Connection, customer_id: str, at: datetime) -> bool:
    """Whether the ledger holds any event of the customer at or after `at`."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM usage_events WHERE customer_id = %s AND timestamp >= %s)",
        (customer_id, at),
    ).fetchone()
    return bool(row and row[0])


def events_since(conn: db.Connection, customer_id: str, start: datetime) -> list[Event]:
    """The customer's events at or after `start`, in time order."""
    rows = conn.execute(
        SELECT_EVENTS + " AND timestamp >= %s ORDER BY timestamp, event_id",
        (customer_id, start),
    ).fetchall()
    return [event_from_row(r) for r in rows]
