"""One batch of usage events into the ledger, the rollups and the rejects, in one transaction.

The batch is claimed by its id first: a redelivered batch finds its claim and gets back the
counter deltas stored with it (so a worker killed between the PostgreSQL commit and the Redis
write converges on redelivery) and writes nothing twice. Events are checked before the
transaction; every event ends up accepted, a duplicate, or a rejected row with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from pricing.decoding import decode_batch
from pricing.events import Event, Rejection, event_json
from pricing.metering import Segment, build_deltas, check_event
from storage import db
from storage.catalog.cache import CustomerContext, catalog
from storage.ledger import events as ledger
from storage.ledger import locks as ingest_locks
from storage.payloads import exact_json, storable_json, storable_text
from storage.settings import get_settings
from storage.usage import rollups
from storage.usage.counters import CounterDelta

# The batch's outcome on its claim, and the running totals (`meter ops stats`) in the same
# statement: no extra round trip per batch. The totals row is this backend's own for the day
# (see migration 0007), so concurrent workers never queue on it; a redelivered batch returns
# before this, and a rolled-back one takes its totals with it.
_RECORD_OUTCOME = """
WITH batch AS (
    UPDATE ingest_batches
    SET accepted = %(accepted)s, duplicates = %(duplicates)s, rejected = %(rejected)s,
        segments = %(segments)s
    WHERE batch_id = %(batch_id)s
    RETURNING received_at
)
INSERT INTO ingest_totals AS t (day, slot, accepted, duplicates)
SELECT (received_at AT TIME ZONE 'UTC')::date, pg_backend_pid(), %(accepted)s, %(duplicates)s
FROM batch
ON CONFLICT (day, slot) DO UPDATE
SET accepted = t.accepted + excluded.accepted, duplicates = t.duplicates + excluded.duplicates
"""


@dataclass
class IngestOutcome:
    batch_id: str
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    deltas: list[CounterDelta] = field(default_factory=list)
    redelivered: bool = False
    # Only for a redelivered batch: the (customer, segment start, end) it touched.
    segments: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def _segment_for(
    cache: dict[str, list[Segment]], context: CustomerContext, at: datetime
) -> Segment | None:
    """The customer's segment at `at`: events of a batch mostly share one, so look there first."""
    found = cache.setdefault(context.customer_id, [])
    for segment in found:
        if segment.start <= at < segment.end:
            return segment
    fresh = catalog.segment(context, at)
    if fresh is not None:
        found.append(fresh)
    return fresh


def _classify(
    raw_events: Sequence[Any], now: datetime
) -> tuple[list[tuple[Event, Segment]], list[Rejection], int, dict[str, CustomerContext]]:
    settings = get_settings()
    earliest = now - timedelta(days=settings.METER_ACCEPT_PAST_DAYS)
    latest = now + timedelta(seconds=settings.METER_ACCEPT_FUTURE_SECONDS)
    parsed, rejections = decode_batch(raw_events)
    contexts = catalog.customers({e.customer_id for e in parsed})
    accepted: list[tuple[Event, Segment]] = []
    segments: dict[str, list[Segment]] = {}
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for event in parsed:
        context = contexts.get(event.customer_id)
        reason: tuple[str, str] | None = None
        segment: Segment | None = None
        if context is None:
            reason = ("unknown_customer", f"customer_id: no customer {event.customer_id!r}")
        elif not earliest <= event.timestamp <= latest:
            reason = (
                "timestamp_out_of_window",
                f"timestamp: {event.timestamp.isoformat()} is outside the accepted window "
                f"{earliest.isoformat()} – {latest.isoformat()}",
            )
        else:
            segment = _segment_for(segments, context, event.timestamp)
            if segment is None:
                reason = (
                    "no_subscription",
                    f"timestamp: customer {event.customer_id!r} has no plan at "
                    f"{event.timestamp.isoformat()}",
                )
            else:
                reason = check_event(segment.plan, event)
        if reason is not None or segment is None:
            code, detail = reason or ("invalid_event", "")
            rejections.append(Rejection(code, detail, event_json(event)))
            continue
        key = (event.customer_id, event.event_id)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append((event, segment))
    return accepted, rejections, duplicates, contexts


def ingest_batch(
    batch_id: str, raw_events: Sequence[Any], *, now: datetime | None = None
) -> IngestOutcome:
    """Write a batch exactly once; return what happened and the counter deltas to apply."""
    now = now or datetime.now(UTC)
    for _ in range(_CLASSIFY_ATTEMPTS):
        try:
            return _ingest_once(batch_id, raw_events, now)
        except _StaleCatalog as stale:
            catalog.forget(stale.customer_ids)
    raise RuntimeError(
        f"batch {batch_id}: subscription histories kept changing while it was classified"
    )


#: How many times a batch is classified again when a history change overtook its catalog.
_CLASSIFY_ATTEMPTS = 5


class _StaleCatalog(Exception):
    """A plan change or cancellation committed after the catalog that classified the batch
    was loaded: the attempt is rolled back and the batch classified again."""

    def __init__(self, customer_ids: Sequence[str]) -> None:
        super().__init__(f"history changed for {len(customer_ids)} customer(s)")
        self.customer_ids = customer_ids


def _ingest_once(batch_id: str, raw_events: Sequence[Any], now: datetime) -> IngestOutcome:
    """One attempt; _StaleCatalog (nothing written) when the catalog it used is out of date."""
    accepted, rejections, in_batch_duplicates, contexts = _classify(raw_events, now)
    ledger.ensure_months([event for event, _ in accepted])
    with db.connection() as conn, conn.transaction():
        with conn.pipeline():  # one round trip: locks, revision, claim
            # Held until the commit: no history change of these customers can start meanwhile.
            revision = ingest_locks.lock_for_ingest(conn, contexts)
            claim = conn.execute(
                "INSERT INTO ingest_batches (batch_id, received_at) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING RETURNING batch_id",
                (batch_id, now),
            )
        current = ingest_locks.revision(revision)
        if any(context.revision < current for context in contexts.values()):
            raise _StaleCatalog(list(contexts))  # rolls the claim back
        claimed = claim.fetchone()
        if claimed is None:
            return _stored_outcome(conn, batch_id)
        inserted = ledger.insert_events(
            conn, batch_id, [event for event, _ in accepted], received_at=now
        )
        fresh = [(e, s) for e, s in accepted if (e.customer_id, e.event_id) in inserted]
        segment_deltas = build_deltas(fresh)
        rejected = _record_rejections(conn, batch_id, rejections, now)
        outcome = IngestOutcome(
            batch_id=batch_id,
            accepted=len(fresh),
            duplicates=in_batch_duplicates + len(accepted) - len(fresh),
            rejected=rejected,
        )
        conn.execute(
            _RECORD_OUTCOME,
            {
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "rejected": outcome.rejected_total,
                "segments": Jsonb(
                    [
                        [d.customer_id, d.start.isoformat(), d.end.isoformat()]
                        for d in segment_deltas
                    ]
                ),
                "batch_id": batch_id,
            },
        )
        # Last, so that the segments' row locks are held for as short a time as possible.
        versions = rollups.apply(conn, segment_deltas)
        outcome.deltas = [
            CounterDelta(
                customer_id=d.customer_id,
                start=d.start,
                end=d.end,
                version=versions[(d.customer_id, d.start)],
                state=d.state,
                uniques=d.uniques,
            )
            for d in segment_deltas
        ]
    return outcome


def _record_rejections(
    conn: Any, batch_id: str, rejections: Sequence[Rejection], now: datetime
) -> dict[str, int]:
    rejected: dict[str, int] = {}
    if not rejections:
        return rejected
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rejected_events (batch_id, event_id, customer_id, metric, reason,"
            " detail, payload, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    batch_id,
                    _text(r.event_id),
                    _text(r.customer_id),
                    _text(r.metric),
                    r.reason,
                    storable_text(r.detail),
                    Jsonb(storable_json(r.payload)),
                    now,
                )
                for r in rejections
            ],
        )
    for r in rejections:
        rejected[r.reason] = rejected.get(r.reason, 0) + 1
    return rejected


def _text(value: str | None) -> str | None:
    """A rejected event's text as PostgreSQL stores it: what was sent is kept readable, with
    NUL and lone surrogates as their \\uXXXX escape (`storable_text`); the row is for reading,
    the reason is what matters."""
    return None if value is None else storable_text(value)


def _stored_outcome(conn: Any, batch_id: str) -> IngestOutcome:
    """A redelivered batch: nothing to write; its segments' counters are to be reloaded from
    the rollups (the first delivery may have died before its Redis write)."""
    row = conn.execute(
        "SELECT accepted, duplicates, segments FROM ingest_batches WHERE batch_id = %s",
        (batch_id,),
    ).fetchone()
    segments = [
        (customer, datetime.fromisoformat(start), datetime.fromisoformat(end))
        for customer, start, end in (row[2] or [])
    ]
    return IngestOutcome(batch_id, row[0] or 0, row[1] or 0, redelivered=True, segments=segments)


def mark_counters_applied(batch_id: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "UPDATE ingest_batches SET counters_applied_at = now() WHERE batch_id = %s",
            (batch_id,),
        )


def record_failed_batch(batch: Any, error: str) -> None:
    """A batch that cannot be ingested: keep it whole, so it can be replayed (nothing is lost).

    The payload is kept as ASCII JSON text (`exact_json`): NUL and lone surrogates, which jsonb
    refuses, survive as their escapes and `json.loads` gives back exactly what was sent.
    """
    batch_id = batch.get("batch_id") if isinstance(batch, dict) else None
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO failed_batches (batch_id, payload, error) VALUES (%s, %s, %s)",
            (
                storable_text(batch_id) if isinstance(batch_id, str) else None,
                exact_json(batch),
                storable_text(error),
            ),
        )


def failed_batches(*, pending_only: bool = True) -> list[dict[str, Any]]:
    """Batches kept after their retries ran out (the ones not replayed yet, by default).

    `payload` is the batch as it was sent; None, with `unreadable` saying why, in the one case
    where it cannot be read back (nested deeper than this process's recursion limit)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, batch_id, payload, error, failed_at, replayed_at FROM failed_batches"
            " WHERE NOT %s OR replayed_at IS NULL ORDER BY id",
            (pending_only,),
        ).fetchall()
    keys = ("id", "batch_id", "payload", "error", "failed_at", "replayed_at")
    found = []
    for row in rows:
        failed = dict(zip(keys, row, strict=True))
        try:
            failed["payload"] = json.loads(failed["payload"])
        except (ValueError, RecursionError) as exc:
            failed["payload"], failed["unreadable"] = None, f"{type(exc).__name__}: {exc}"
        found.append(failed)
    return found


def mark_replayed(failed_id: int) -> None:
    with db.connection() as conn:
        conn.execute("UPDATE failed_batches SET replayed_at = now() WHERE id = %s", (failed_id,))


def stats() -> dict[str, Any]:
    """Ingest totals since the start: accepted, duplicates, rejected by reason.

    Accepted and duplicates come from the running totals (a row per day, plus today's per
    backend), never from ingest_batches, which is pruned."""
    with db.connection() as conn:
        accepted, duplicates = conn.execute(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0) FROM ingest_totals"
        ).fetchone() or (0, 0)
        rejected = dict(
            conn.execute("SELECT reason, count(*) FROM rejected_events GROUP BY reason").fetchall()
        )
    return {"accepted": int(accepted), "duplicates": int(duplicates), "rejected": rejected}


def refusals(raw_events: Sequence[Any], *, now: datetime | None = None) -> list[Rejection]:
    """Why ingest would reject these events now (an empty list: it would take them all), so a
    producer that can reach the database, such as `meter events send`, refuses them up front."""
    return _classify(raw_events, now or datetime.now(UTC))[1]
