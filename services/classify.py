"""Classifying a batch: which of its events are accepted (each with its segment and the route
PostgreSQL folds it by), which repeat an earlier event of the batch, and why the others are
rejected. The rules are `services.ingest`'s (its docstring); this module applies them, once per
batch where it can (`_all_plain`: a batch of known customers' plain events in their current
segments, nearly every batch), else event by event with what is the same for many events looked
up once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.decoding import EventsJSON, decode_batch
from pricing.events import MAX_ID_LENGTH, Event, Rejection, event_json, text_problem
from pricing.metering import Segment, check_event, plan_index
from pricing.plans import Plan
from storage.catalog.cache import CustomerContext, catalog
from storage.ledger.batch_write import Route
from storage.settings import get_settings


def _segment_for(
    cache: dict[str, list[tuple[datetime, datetime, Segment]]],
    context: CustomerContext,
    at: datetime,
) -> Segment | None:
    """The customer's segment at `at`, remembered for the batch with its bounds in UTC (the
    events' zone: comparing datetimes of one zone is the cheap case)."""
    found = cache.setdefault(context.customer_id, [])
    for start, end, segment in found:
        if start <= at < end:
            return segment
    fresh = catalog.segment(context, at)
    if fresh is not None:
        found.append((fresh.start.astimezone(UTC), fresh.end.astimezone(UTC), fresh))
    return fresh


#: Aggregations PostgreSQL derives from the event's quantity alone (`batch_write`).
_PLAIN_AGGREGATIONS = frozenset({"sum", "count", "max", "latest"})


def _route(segment: Segment, customer_id: str, name: str) -> Route:
    """Where the segment's events of this name are folded: in SQL when every metric reading
    them is plain (its aggregation of the quantity, no filter, field or percentage charge)."""
    return Route(
        customer_id,
        segment.start,
        segment.end,
        segment.timezone,
        name,
        _plain_keys(segment.plan, name),
    )


def _plain_keys(plan: Plan, name: str) -> tuple[str, ...]:
    """The plain metrics reading `name`, or () when any metric reading it is not plain;
    remembered per plan object (plans are immutable), like `plan_index`."""
    cached = _plain_cache.get(id(plan))
    if cached is None or cached[0] is not plan:
        if len(_plain_cache) > 64:  # a plan is read again every few seconds: keep a few dozen
            _plain_cache.clear()
        cached = _plain_cache[id(plan)] = (plan, {})
    keys = cached[1].get(name)
    if keys is None:
        readers = plan_index(plan).get(name, ())
        plain = all(
            r.metric.aggregation in _PLAIN_AGGREGATIONS
            and r.metric.filter is None
            and r.metric.field is None
            and not r.percentage
            for r in readers
        )
        keys = cached[1][name] = tuple(r.key for r in readers) if plain and readers else ()
    return keys


_plain_cache: dict[int, tuple[Plan, dict[str, tuple[str, ...]]]] = {}


@dataclass
class Classified:
    accepted: list[tuple[Event, Segment]]
    rejections: list[Rejection]
    duplicates: int
    contexts: dict[str, CustomerContext]
    routes: dict[tuple[int, str], Route]  # by (id of the segment, event name)
    #: The customers the batch names, valid as keys (its rejected events' too).
    named: set[str]

    @property
    def size(self) -> int:
        """How many events the batch holds."""
        return len(self.accepted) + len(self.rejections) + self.duplicates


def classify(
    raw_events: Sequence[Any] | EventsJSON, now: datetime, *, where: list[int] | None = None
) -> Classified:
    """Every event of the batch: accepted (with its segment), a duplicate within the batch, or
    rejected with its reason. One pass; what is the same for many events (the customer's
    segment, how a plan reads an event name) is looked up once per batch, and an event whose
    customer and segment were seen already takes the short path (same checks, same order).
    `where`, when given, receives the position of each accepted event, in order."""
    settings = get_settings()
    earliest = now - timedelta(days=settings.METER_ACCEPT_PAST_DAYS)
    latest = now + timedelta(seconds=settings.METER_ACCEPT_FUTURE_SECONDS)
    parsed, rejections = decode_batch(raw_events)
    # decode_batch accepts or rejects each event: their number is the batch's.
    positions = _positions(len(parsed) + len(rejections), rejections)
    customers = {e.customer_id for e in parsed}
    contexts = catalog.customers(customers)
    named = customers | valid_customer_ids(r.payload for r in rejections)
    short = _all_plain(parsed, contexts, earliest, latest, customers)
    if short is not None:  # the whole batch judged at once (nearly always)
        if where is not None:
            where.extend(positions)
        return Classified(short[0], rejections, 0, contexts, short[1], named)
    accepted: list[tuple[Event, Segment]] = []
    segments: dict[str, list[tuple[datetime, datetime, Segment]]] = {}
    routes: dict[tuple[int, str], Route] = {}
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for position, event in zip(positions, parsed, strict=True):
        customer_id = event.customer_id
        at = event.timestamp
        segment: Segment | None = None
        if earliest <= at <= latest:  # a known customer's known segment: no lookup
            for start, end, candidate in segments.get(customer_id, ()):
                if start <= at < end:
                    segment = candidate
                    break
        reason: tuple[str, str] | None = None
        if segment is None:
            reason, segment = _judge(contexts, segments, event, earliest, latest)
        if segment is not None:
            route_key = (id(segment), event.metric)
            route = routes.get(route_key)
            # A plain route's only check is the sign (check_event says which reason).
            if route is None or not route.keys or event.quantity < 0:
                reason = check_event(segment.plan, event)
                if reason is None and route is None:
                    routes[route_key] = _route(segment, customer_id, event.metric)
        if reason is not None or segment is None:
            code, detail = reason or ("invalid_event", "")
            rejections.append(Rejection(code, detail, event_json(event), position))
            continue
        key = (customer_id, event.event_id)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append((event, segment))
        if where is not None:
            where.append(position)
    return Classified(accepted, rejections, duplicates, contexts, routes, named)


def _judge(
    contexts: dict[str, CustomerContext],
    segments: dict[str, list[tuple[datetime, datetime, Segment]]],
    event: Event,
    earliest: datetime,
    latest: datetime,
) -> tuple[tuple[str, str] | None, Segment | None]:
    """The long path: the customer, the window, the segment, in that order; (reason, None)
    for the first that fails, else (None, the segment)."""
    customer_id = event.customer_id
    context = contexts.get(customer_id)
    if context is None:
        return ("unknown_customer", f"customer_id: no customer {customer_id!r}"), None
    if not earliest <= event.timestamp <= latest:
        return (
            "timestamp_out_of_window",
            f"timestamp: {event.timestamp.isoformat()} is outside the accepted window "
            f"{earliest.isoformat()} – {latest.isoformat()}",
        ), None
    segment = _segment_for(segments, context, event.timestamp)
    if segment is None:
        return (
            "no_subscription",
            f"timestamp: customer {customer_id!r} has no plan at {event.timestamp.isoformat()}",
        ), None
    return None, segment


def _positions(count: int, rejections: Sequence[Rejection]) -> Sequence[int]:
    """Where the events that met the contract sit in their batch, in order (decode_batch
    keeps the order of the events it accepts and gives each rejection its position)."""
    if not rejections:
        return range(count)
    refused = {r.position for r in rejections}
    return [position for position in range(count) if position not in refused]


def _all_plain(
    parsed: list[Event],
    contexts: dict[str, CustomerContext],
    earliest: datetime,
    latest: datetime,
    customers: set[str],
) -> tuple[list[tuple[Event, Segment]], dict[tuple[int, str], Route]] | None:
    """The batch's events, all accepted, with their routes, when each check of the per-event
    pass holds for the batch as a whole: every customer known, every timestamp in the window
    and in the one segment its customer has over the batch's time span, every name read by
    plain metrics only (whose only check is the sign), no negative quantity, no repeated id.
    None when any does not: the per-event pass then decides, event by event."""
    if not parsed or len({(e.customer_id, e.event_id) for e in parsed}) != len(parsed):
        return None
    stamps = [e.timestamp for e in parsed]
    first, last = min(stamps), max(stamps)
    if first < earliest or last > latest or min(e.quantity for e in parsed) < 0:
        return None
    cache: dict[str, list[tuple[datetime, datetime, Segment]]] = {}
    segment_of: dict[str, Segment] = {}
    for customer_id in customers:
        context = contexts.get(customer_id)
        segment = _segment_for(cache, context, first) if context is not None else None
        if segment is None or last >= segment.end:
            return None
        segment_of[customer_id] = segment
    routes: dict[tuple[int, str], Route] = {}
    for customer_id, name in {(e.customer_id, e.metric) for e in parsed}:
        segment = segment_of[customer_id]
        route = _route(segment, customer_id, name)
        if not route.keys:  # an unknown name, or one that Python folds
            return None
        routes[(id(segment), name)] = route
    return [(e, segment_of[e.customer_id]) for e in parsed], routes


def valid_customer_ids(payloads: Iterable[Any]) -> set[str]:
    """The customer ids of these raw events that can be keys: strings of an id's length,
    without NUL or lone surrogates."""
    return {
        customer_id
        for item in payloads
        if isinstance(item, dict)
        and isinstance(customer_id := item.get("customer_id"), str)
        and 0 < len(customer_id) <= MAX_ID_LENGTH
        and text_problem(customer_id) is None
    }
