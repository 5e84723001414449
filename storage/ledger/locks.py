"""Ingest against changes of subscription history: which plan an event is rated under must not
change between the moment a batch is classified and the moment it commits.

Ingest classifies events with the in-process catalog (cached for seconds), while a plan change
or a cancellation re-derives the rollups of the segments it affects from the ledger. Both take a
transaction-scoped advisory lock on the customer's bucket (one of `BUCKETS`): ingest shared,
for the buckets of its batch, a history change exclusive, for its customer. A change therefore
waits for the batches in flight and sees their events in the ledger; a batch that starts after
a change committed finds the history revision moved (`history_revision`, bumped by every change
in its transaction) and classifies again with a fresh catalog. Buckets rather than one lock per
customer keep a batch of hundreds of customers to a bounded number of locks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import psycopg

from storage import db

BUCKETS = 64
_NAMESPACE = 0x6D6C68  # 'mlh': keeps these apart from other advisory locks


def bucket(customer_id: str) -> int:
    return zlib.crc32(customer_id.encode()) % BUCKETS


def lock_for_change(conn: db.Connection, customer_id: str) -> None:
    """A history change of `customer_id`: wait for the batches in flight, hold new ones off
    until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_NAMESPACE, bucket(customer_id)))


def bump_revision(conn: db.Connection) -> None:
    """A history changed in this transaction: batches classified before it must be again."""
    conn.execute(
        "INSERT INTO history_revision (singleton, revision) VALUES (true, 1)"
        " ON CONFLICT (singleton) DO UPDATE SET revision = history_revision.revision + 1"
    )


def current_revision(conn: db.Connection) -> int:
    row = conn.execute("SELECT revision FROM history_revision").fetchone()
    return int(row[0]) if row else 0


def lock_for_ingest(conn: db.Connection, customer_ids: Iterable[str]) -> psycopg.Cursor[Any]:
    """Hold off history changes of these customers until the transaction ends, and ask for
    the history revision as it is once the locks are held (a catalog loaded at an older one
    may be stale): `revision(cursor)`. Run it in the caller's pipeline: it then costs no round
    trip of its own; the revision is read by a statement of its own, whose snapshot is taken
    after the locks are granted."""
    buckets = sorted({bucket(customer_id) for customer_id in customer_ids})
    if buckets:
        conn.execute(
            "SELECT pg_advisory_xact_lock_shared(%s, b) FROM unnest(%s::int[]) AS b",
            (_NAMESPACE, buckets),
        )
    return conn.execute("SELECT revision FROM history_revision")


def revision(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    return int(row[0]) if row else 0
