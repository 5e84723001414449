"""Re-rating after a customer's subscription history changes from a moment on (a plan change
or a cancellation that takes effect at `at`, possibly in the past).

A rollup is an aggregate (peaks, latest values, distinct sets): an event cannot be taken out of
one. So every segment from the one that contains `at` on is derived again from the ledger, in
the transaction that changes the history (which holds the customer's ingest lock, see
`storage.ledger.locks`): its rollups, distinct values and daily totals are rebuilt from the
events under the new history and its version bumped. After the commit (`settle`), the Redis
counters of those segments are reloaded from the new rollups and the customer's drafts are
recomputed; a finalized period gets the difference as adjustment lines on the next invoice,
the way late usage does (`services.invoicing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pricing.events import Event
from pricing.metering import Segment, build_deltas, check_event
from pricing.periods import local_date, next_period, zone
from services import invoice_lifecycle as invoices
from services.periods import billing_interval, period_at
from storage import db
from storage.catalog.cache import CustomerContext, catalog
from storage.errors import InvalidInput
from storage.ledger import history
from storage.settings import get_settings
from storage.usage import counters, rollups


@dataclass(frozen=True)
class Rerating:
    """What a history change re-derived: the segments from `since` on, for `settle`."""

    customer_id: str
    since: datetime
    segments: tuple[tuple[datetime, datetime], ...]
    unique_metrics: tuple[str, ...]


def rederive(
    conn: db.Connection,
    before: CustomerContext,
    after: CustomerContext,
    at: datetime,
    now: datetime,
) -> Rerating:
    """Rebuild the customer's rollups from the segment that contained `at` on, under the
    history `after`, on `conn` (the transaction that changed the history).

    InvalidInput (the change is refused, nothing written) when usage already accepted at or
    after `at` would be left without a plan or is not a metric of the new plan.
    """
    customer_id = after.customer_id
    first = catalog.segment(before, at)
    since = first.start if first is not None else at
    until = now + timedelta(seconds=get_settings().METER_ACCEPT_FUTURE_SECONDS)
    if not history.has_events_since(conn, customer_id, at):
        # The usual change, from now on: no usage moves, so no rollup changes (a segment that
        # ends earlier keeps its events); only versions and ends do. No ledger scan.
        new_segments = list(_segments_from(after, since, until))
        old_segments = list(_segments_from(before, since, until))
        rollups.restamp(conn, customer_id, since, [(s.start, s.end) for s in new_segments])
        return _rerating(customer_id, since, old_segments, new_segments)
    first_day = local_date(since, after.timezone)
    events = history.events_since(conn, customer_id, _local_midnight(since, after.timezone))
    accepted = _rated_under(after, events, since, at)
    if events:
        until = max(until, events[-1].timestamp)
    new_segments = list(_segments_from(after, since, until))
    old_segments = list(_segments_from(before, since, until))
    rollups.rebuild(
        conn,
        customer_id,
        since,
        first_day,
        build_deltas(accepted),
        [(s.start, s.end) for s in new_segments],
    )
    return _rerating(customer_id, since, old_segments, new_segments)


def _rated_under(
    after: CustomerContext, events: list[Event], since: datetime, at: datetime
) -> list[tuple[Event, Segment]]:
    """Each event with the segment it belongs to under the history `after`. InvalidInput when
    an event at or after `since` would have no plan, or is not priced by its new plan."""
    accepted: list[tuple[Event, Segment]] = []
    orphans: list[Event] = []
    refused: list[tuple[Event, str]] = []
    for event in events:
        segment = catalog.segment(after, event.timestamp)
        if event.timestamp < since:  # an earlier segment's event: only its day is rebuilt
            if segment is not None:
                accepted.append((event, segment))
        elif segment is None:
            orphans.append(event)
        else:
            reason = check_event(segment.plan, event)
            if reason is None:
                accepted.append((event, segment))
            else:
                refused.append((event, reason[1]))
    if orphans:
        raise InvalidInput(
            f"at: {len(orphans)} usage event(s) were already accepted at or after"
            f" {at.isoformat()} (the last at {orphans[-1].timestamp.isoformat()}); the"
            " subscription cannot end before usage it has already counted"
        )
    if refused:
        event, detail = refused[0]
        raise InvalidInput(
            f"at: {len(refused)} usage event(s) accepted since {at.isoformat()} cannot be"
            f" priced under the new history ({detail})"
        )
    return accepted


def _rerating(
    customer_id: str, since: datetime, old: list[Segment], new: list[Segment]
) -> Rerating:
    keys = {s.start: s.end for s in old}
    keys.update({s.start: s.end for s in new})
    unique_metrics = sorted(
        {
            key
            for segment in (*old, *new)
            for key, metric in segment.plan.metrics.items()
            if metric.aggregation == "unique_count"
        }
    )
    return Rerating(customer_id, since, tuple(sorted(keys.items())), tuple(unique_metrics))


def settle(rerating: Rerating, *, now: datetime | None = None) -> list[invoices.Invoice]:
    """After the commit: reload the re-derived segments' counters and recompute the drafts
    they affect (each draft also bills the difference for earlier finalized periods).
    Returns the drafts recomputed."""
    now = now or datetime.now(UTC)
    customer_id = rerating.customer_id
    for start, _ in rerating.segments:
        # Distinct values can only be added to a set: empty them, then load the new rollups
        # (the hash itself is replaced by the load, whose version is newer). A reader that
        # snapshotted the rollups before the commit could still add old values back after
        # this; the nightly reconciliation compares the distinct counts and repairs that.
        counters.forget_segment(customer_id, start, rerating.unique_metrics)
    counters.reload_segments([(customer_id, start, end) for start, end in rerating.segments])
    catalog.clear()
    context = invoices.customer_context(customer_id)
    recomputed = []
    for draft in invoices.list_invoices(customer_id=customer_id, status="draft"):
        if draft.period_end <= rerating.since:
            continue
        period = invoices.period_of(context, draft.period_start)
        if not catalog.segments(context, period):
            # The period is no longer subscribed at all (a cancellation before it began).
            invoices.void(draft.id, now=now)
            continue
        recomputed.append(invoices.generate(customer_id, draft.period_start, now=now))
    return recomputed


def _segments_from(context: CustomerContext, since: datetime, until: datetime) -> Iterator[Segment]:
    """The customer's segments that start at or after `since`, in periods up to `until`."""
    period = period_at(context, since)
    while period.start <= until:
        for segment in catalog.segments(context, period):
            if segment.start >= since:
                yield segment
        period = next_period(period, interval=billing_interval(context, period.end))


def _local_midnight(at: datetime, timezone: str) -> datetime:
    """The instant the local day of `at` began (where a DST change skips midnight, the first
    instant of that day)."""
    day = local_date(at, timezone)
    return datetime(day.year, day.month, day.day, tzinfo=zone(timezone)).astimezone(UTC)
