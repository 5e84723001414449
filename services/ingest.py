"""Ingest: which events of a batch are accepted, and writing a batch exactly once.

The rules: an event must meet the contract (`pricing.decoding.decode_batch`), belong to a known
customer, fall in the accepted window (METER_ACCEPT_PAST_DAYS back, METER_ACCEPT_FUTURE_SECONDS
ahead of `now`), in a segment of the customer's subscription whose plan reads its metric
(`pricing.metering.check_event`); the second event of a batch with the same id is a duplicate.

The batch is claimed by its id first (`storage.ledger.batches`): a redelivered batch finds its
claim and gets back the segments it touched (so a worker killed between the PostgreSQL commit
and the Redis write converges on redelivery) and writes nothing twice. Events are classified
before the transaction; every event ends up accepted, a duplicate, or a rejected row with its
reason. The transaction holds the customers' ingest locks (`storage.ledger.locks`): a history
change committed after the catalog was read sends the batch back to be classified again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.decoding import decode_batch
from pricing.events import Event, Rejection, event_json
from pricing.metering import Segment, SegmentDelta, build_deltas, check_event
from storage import db
from storage.catalog.cache import CustomerContext, catalog
from storage.ledger import batches
from storage.ledger import events as ledger
from storage.ledger import locks as ingest_locks
from storage.settings import get_settings
from storage.usage import rollups
from storage.usage.counters import CounterDelta


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
    raw_events: Sequence[Any], now: datetime, *, where: list[int] | None = None
) -> tuple[list[tuple[Event, Segment]], list[Rejection], int, dict[str, CustomerContext]]:
    """Accepted events with their segments, rejections, in-batch duplicates, the contexts;
    `where`, when given, receives the position of each accepted event, in order."""
    settings = get_settings()
    earliest = now - timedelta(days=settings.METER_ACCEPT_PAST_DAYS)
    latest = now + timedelta(seconds=settings.METER_ACCEPT_FUTURE_SECONDS)
    parsed, rejections = decode_batch(raw_events)
    positions = _positions(len(raw_events), rejections)
    contexts = catalog.customers({e.customer_id for e in parsed})
    accepted: list[tuple[Event, Segment]] = []
    segments: dict[str, list[Segment]] = {}
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for position, event in zip(positions, parsed, strict=True):
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
            rejections.append(Rejection(code, detail, event_json(event), position))
            continue
        key = (event.customer_id, event.event_id)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append((event, segment))
        if where is not None:
            where.append(position)
    return accepted, rejections, duplicates, contexts


def _positions(count: int, rejections: Sequence[Rejection]) -> list[int]:
    """Where the events that met the contract sit in their batch, in order (decode_batch
    keeps the order of the events it accepts and gives each rejection its position)."""
    refused = {r.position for r in rejections}
    return [position for position in range(count) if position not in refused]


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
            claim = batches.claim(conn, batch_id, now)
        current = ingest_locks.revision(revision)
        if any(context.revision < current for context in contexts.values()):
            raise _StaleCatalog(list(contexts))  # rolls the claim back
        if claim.fetchone() is None:
            stored = batches.stored_outcome(conn, batch_id)
            return IngestOutcome(
                batch_id, stored.accepted, stored.duplicates, redelivered=True,
                segments=stored.segments,
            )  # fmt: skip
        inserted = ledger.insert_events(
            conn, batch_id, [event for event, _ in accepted], received_at=now
        )
        fresh = [(e, s) for e, s in accepted if (e.customer_id, e.event_id) in inserted]
        segment_deltas = build_deltas(fresh)
        outcome = IngestOutcome(
            batch_id=batch_id,
            accepted=len(fresh),
            duplicates=in_batch_duplicates + len(accepted) - len(fresh),
            rejected=batches.record_rejections(conn, batch_id, rejections, now),
        )
        batches.record_outcome(
            conn,
            batch_id,
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            rejected=outcome.rejected_total,
            segments=[(d.customer_id, d.start, d.end) for d in segment_deltas],
        )
        # Last, so that the segments' row locks are held for as short a time as possible.
        outcome.deltas = _counter_deltas(segment_deltas, rollups.apply(conn, segment_deltas))
    return outcome


def _counter_deltas(
    deltas: Sequence[SegmentDelta], versions: dict[tuple[str, datetime], int]
) -> list[CounterDelta]:
    return [
        CounterDelta(
            customer_id=d.customer_id,
            start=d.start,
            end=d.end,
            version=versions[(d.customer_id, d.start)],
            state=d.state,
            uniques=d.uniques,
        )
        for d in deltas
    ]


def refusals(raw_events: Sequence[Any], *, now: datetime | None = None) -> list[Rejection]:
    """Why ingest would reject these events now (an empty list: it would take them all), so a
    producer that can reach the database, such as `meter events send` or `POST /v1/events`,
    refuses them up front. Each rejection carries its event's position in `raw_events`."""
    return _classify(raw_events, now or datetime.now(UTC))[1]


def screen(
    raw_events: Sequence[Any], *, now: datetime | None = None
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """What ingest would do with each event now, in one pass: the events it would accept,
    each with its position in `raw_events`, and a rejection (with its position) for each it
    would refuse. A position in neither repeats an earlier event of the batch (same customer
    and event id): ingest would count it once."""
    where: list[int] = []
    accepted, rejections, _, _ = _classify(raw_events, now or datetime.now(UTC), where=where)
    return list(zip(where, (event for event, _ in accepted), strict=True)), rejections
