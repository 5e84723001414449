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

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from pricing.decoding import EventsJSON
from pricing.events import Event, Rejection
from pricing.metering import SegmentDelta, SegmentState, build_deltas
from pricing.periods import local_date
from services.classify import Classified
from services.classify import classify as _classify
from storage import db
from storage.catalog.cache import catalog
from storage.ledger import batch_write, batches
from storage.ledger import events as ledger
from storage.ledger import locks as ingest_locks
from storage.ledger.batch_write import Route
from storage.usage import rollups
from storage.usage.counters import CounterCopy


@dataclass
class IngestOutcome:
    batch_id: str
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # The counters' copy of every segment the batch changed (`storage.usage.counters`).
    deltas: list[CounterCopy] = field(default_factory=list)
    redelivered: bool = False
    # Only for a redelivered batch: the (customer, segment start, end) it touched.
    segments: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    # The customers the batch names, valid as keys (None for a redelivered batch).
    named: set[str] | None = None
    #: How many events the batch holds (accepted, repeated or rejected).
    events: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def ingest_batch(
    batch_id: str, raw_events: Sequence[Any] | EventsJSON, *, now: datetime | None = None
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


def _ingest_once(
    batch_id: str, raw_events: Sequence[Any] | EventsJSON, now: datetime
) -> IngestOutcome:
    """One attempt; _StaleCatalog (nothing written) when the catalog it used is out of date.

    Round trips to PostgreSQL: two, in one pipeline (BEGIN, rejections, locks, revision,
    claim and the batch's statement; then the commit), plus the pool's check of the
    connection; events whose metrics need Python add a few."""
    found = _classify(raw_events, now)
    events = [event for event, _ in found.accepted]
    ledger.ensure_months(events)
    with db.connection() as conn:
        try:
            with conn.pipeline() as pipeline, conn.transaction():
                written = _write(conn, pipeline, batch_id, found, events, now)
            written.events = found.size
            return written
        except _Redelivered:
            pass
        stored = batches.stored_outcome(conn, batch_id)
    return IngestOutcome(
        batch_id,
        stored.accepted,
        stored.duplicates,
        redelivered=True,
        segments=stored.segments,
        events=found.size,
    )


class _Redelivered(Exception):
    """The batch was claimed before: roll back what this attempt sent, report the first one."""


def _write(
    conn: db.Connection,
    pipeline: psycopg.Pipeline,
    batch_id: str,
    found: Classified,
    events: list[Event],
    now: datetime,
) -> IngestOutcome:
    # Sent in the caller's pipeline; the sync in _send_write is their one round trip.
    rejected = batches.record_rejections(conn, batch_id, found.rejections, now)
    # Held until the commit: no history change of these customers can start meanwhile.
    revision = ingest_locks.lock_for_ingest(conn, found.contexts)
    claim = batches.claim(conn, batch_id, now)
    written = _send_write(conn, pipeline, batch_id, found, events, now)
    # The segments' merged rollups, read back after the statement's sync: sent before it, the
    # read would share the pipeline segment a known event aborts, and psycopg's record of the
    # statements it prepared would then not match the server's.
    segments = sorted({(route.customer_id, route.start) for route in found.routes.values()})
    merged = rollups.send_states(conn, segments)
    current = ingest_locks.revision(revision)
    if any(context.revision < current for context in found.contexts.values()):
        raise _StaleCatalog(list(found.contexts))  # rolls everything back
    if claim.fetchone() is None:
        raise _Redelivered
    result = batch_write.read_result(written)
    states = rollups.states_from(merged, segments)
    python_deltas: list[SegmentDelta] = []
    if result.python_events:
        fresh = [
            (e, s) for e, s in found.accepted if (e.customer_id, e.event_id) in result.python_events
        ]
        python_deltas = build_deltas(fresh)
        rollups.apply(conn, python_deltas, bump=False)
        states.update(rollups.read_states(conn, [(d.customer_id, d.start) for d in python_deltas]))
    outcome = IngestOutcome(
        batch_id=batch_id,
        accepted=result.accepted,
        duplicates=found.duplicates + len(events) - result.accepted,
        rejected=rejected,
        deltas=_counter_copies(result, states, python_deltas),
        named=found.named,
    )
    batch_changed(conn, outcome.deltas, now)
    return outcome


def _send_write(
    conn: db.Connection,
    pipeline: psycopg.Pipeline,
    batch_id: str,
    found: Classified,
    events: list[Event],
    now: datetime,
) -> Any:
    """The batch's statement, sent and synced with what the pipeline holds before it: the one
    for new events, or, when one of them is known (a resend, a redelivery), the one that skips
    the known events (a round trip more). Its cursor, for `batch_write.read_result`."""
    routes = _with_days(list(found.routes.values()), events)

    def send(after_known_event: bool) -> Any:
        return batch_write.write_batch(
            conn,
            batch_id,
            events,
            routes,
            received_at=now,
            duplicates=found.duplicates,
            rejected=len(found.rejections),
            after_known_event=after_known_event,
        )

    written = send(after_known_event=False)
    try:
        batch_write.round_trip(conn)
    except psycopg.errors.UniqueViolation as error:
        if not batch_write.is_known_event(error):
            raise
        # Until a sync the server skips what follows the error (the sync reports the round
        # trip's probe as aborted).
        with contextlib.suppress(psycopg.errors.PipelineAborted):
            pipeline.sync()
        written = send(after_known_event=True)
    return written


def _with_days(routes: list[Route], events: Sequence[Event]) -> list[Route]:
    """The routes with the local day of their events where the whole batch falls in one day of
    their time zone (nearly always: a batch spans a fraction of a second)."""
    if not events:
        return routes
    stamps = [event.timestamp for event in events]
    first, last = min(stamps), max(stamps)
    days: dict[str, date | None] = {}
    for zone in {route.timezone for route in routes}:
        day = local_date(first, zone)
        days[zone] = day if local_date(last, zone) == day else None
    return [
        Route(r.customer_id, r.start, r.end, r.timezone, r.name, r.keys, days[r.timezone])
        for r in routes
    ]


def batch_changed(conn: db.Connection, copies: Sequence[CounterCopy], now: datetime) -> None:
    """What the batch changed, in its transaction, just before the commit: one copy per
    customer × segment (its merged state at its new version). The hook for checks that must
    see every batch (alert thresholds); the rollups already hold the new totals."""


def _counter_copies(
    result: batch_write.WriteResult,
    states: dict[tuple[str, datetime], SegmentState],
    python_deltas: Sequence[SegmentDelta],
) -> list[CounterCopy]:
    """One counter copy per segment the batch bumped: its rollups as read back after the
    batch's writes, and the distinct values the batch added."""
    uniques = {(delta.customer_id, delta.start): delta.uniques for delta in python_deltas}
    return [
        CounterCopy(
            customer_id=customer_id,
            start=start,
            end=end,
            version=version,
            state=states[(customer_id, start)],
            uniques=uniques.get((customer_id, start), {}),
        )
        for (customer_id, start), (end, version) in result.versions.items()
    ]


def refusals(raw_events: Sequence[Any], *, now: datetime | None = None) -> list[Rejection]:
    """Why ingest would reject these events now (an empty list: it would take them all), so a
    producer that can reach the database, such as `meter events send` or `POST /v1/events`,
    refuses them up front. Each rejection carries its event's position in `raw_events`."""
    return _classify(raw_events, now or datetime.now(UTC)).rejections


def screen(
    raw_events: Sequence[Any], *, now: datetime | None = None
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """What ingest would do with each event now, in one pass: the events it would accept,
    each with its position in `raw_events`, and a rejection (with its position) for each it
    would refuse. A position in neither repeats an earlier event of the batch (same customer
    and event id): ingest would count it once."""
    where: list[int] = []
    found = _classify(raw_events, now or datetime.now(UTC), where=where)
    return list(zip(where, (event for event, _ in found.accepted), strict=True)), found.rejections
