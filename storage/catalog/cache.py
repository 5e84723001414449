"""An in-process cache of customers, their subscriptions and plans, for the ingest hot path.

Ingest validates every event against the customer's plan; one SQL query per batch per customer
would cost more than the inserts. Customers are cached for a few seconds (a plan change shows up
within `ttl`), immutable plan versions forever. A customer that is not found is looked up again
on the next batch, so events sent right after `meter customers create` are never rejected for
long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import datetime

from pricing.errors import echo
from pricing.metering import Segment
from pricing.periods import Period
from pricing.plans import Plan
from pricing.subscriptions import CustomerContext as CustomerContext
from pricing.subscriptions import SubscriptionSpan as SubscriptionSpan
from pricing.subscriptions import segment_at, segments_of
from storage import db
from storage.catalog.plans import get_plan
from storage.errors import NotFound


class Catalog:
    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._customers: dict[str, tuple[float, CustomerContext | None]] = {}
        self._plans: dict[tuple[str, int | None], tuple[float, Plan, int]] = {}
        # Segments found for a customer's cached context (that very object: a context read
        # again starts afresh), kept no longer than the plans they hold; one entry per customer.
        self._segments: dict[str, tuple[float, CustomerContext, list[Segment]]] = {}

    def clear(self) -> None:
        with self._lock:
            self._customers.clear()
            self._plans.clear()
            self._segments.clear()

    def customers(self, ids: set[str]) -> dict[str, CustomerContext]:
        """The known customers among `ids` (unknown ones are simply absent)."""
        now = time.monotonic()
        found: dict[str, CustomerContext] = {}
        missing = []
        with self._lock:
            for customer_id in ids:
                cached = self._customers.get(customer_id)
                if cached and cached[0] > now and cached[1] is not None:
                    found[customer_id] = cached[1]
                else:
                    missing.append(customer_id)
        if missing:
            loaded = _load_customers(missing)
            with self._lock:
                for customer_id in missing:
                    context = loaded.get(customer_id)
                    self._customers[customer_id] = (now + self.ttl, context)
                    if context is not None:
                        found[customer_id] = context
        return found

    def forget(self, ids: Iterable[str]) -> None:
        """Drop these customers from the cache (their history changed)."""
        with self._lock:
            for customer_id in ids:
                self._customers.pop(customer_id, None)
                self._segments.pop(customer_id, None)

    def plan(self, code: str) -> tuple[Plan, int]:
        """The latest version of a plan (re-read after `ttl`; versions are immutable)."""
        now = time.monotonic()
        with self._lock:
            cached = self._plans.get((code, None))
        if cached and cached[0] > now:
            return cached[1], cached[2]
        plan, version = get_plan(code)
        with self._lock:
            self._plans[(code, None)] = (now + self.ttl, plan, version)
        return plan, version

    def segment(self, context: CustomerContext, at: datetime) -> Segment | None:
        """The billing period segment and plan in force for a customer at `at` (see
        `pricing.subscriptions.segment_at`); the ingest hot path asks once per customer and
        batch, so the segments of a context are remembered for `ttl`."""
        now = time.monotonic()
        customer_id = context.customer_id
        cached = self._segments.get(customer_id)
        if cached is not None and cached[0] > now and cached[1] is context:
            for segment in cached[2]:
                if segment.start <= at < segment.end:
                    return segment
        found = segment_at(context, at, self.plan)
        if found is not None:
            with self._lock:
                entry = self._segments.get(customer_id)
                if entry is None or entry[1] is not context or entry[0] <= now:
                    entry = (now + self.ttl, context, [])
                    self._segments[customer_id] = entry
                if len(entry[2]) < 16:  # a few periods at most: a backfill cannot grow it
                    entry[2].append(found)
        return found

    def segments(self, context: CustomerContext, period: Period) -> list[Segment]:
        """Every segment of a billing period, one per subscription span that overlaps it (see
        `pricing.subscriptions.segments_of`)."""
        return segments_of(context, period, self.plan)

    def plan_version(self, code: str, version: int) -> Plan:
        """A stored plan version (immutable, so cached for good)."""
        with self._lock:
            cached = self._plans.get((code, version))
        if cached:
            return cached[1]
        plan, _ = get_plan(code, version)
        with self._lock:
            self._plans[(code, version)] = (float("inf"), plan, version)
        return plan


def load_contexts(ids: Iterable[str] | None = None) -> dict[str, CustomerContext]:
    """Customers read fresh from PostgreSQL, past the cache (billing must see every plan
    change); every customer when `ids` is None."""
    with db.connection() as conn:
        if ids is None:
            ids = [row[0] for row in conn.execute("SELECT id FROM customers ORDER BY id")]
        return read_contexts(conn, list(ids))


def customer_context(customer_id: str, *, conn: db.Connection | None = None) -> CustomerContext:
    """The customer and its subscriptions, fresh; NotFound if there is none."""
    with db.transaction(conn) as tx:
        context = read_contexts(tx, [customer_id]).get(customer_id)
    if context is None:
        raise NotFound(f"customer_id: no customer {echo(customer_id)}")
    return context


def read_contexts(conn: db.Connection, ids: list[str]) -> dict[str, CustomerContext]:
    """The customers among `ids` with their subscription spans, read on `conn` in one round
    trip (the caller's transaction: billing reads them with what it prices)."""
    if not ids:
        return {}
    with conn.pipeline():
        revision = conn.execute("SELECT revision FROM history_revision")
        customers = conn.execute(
            "SELECT id, timezone, anchor_day, starts_at, ends_at FROM customers WHERE id = ANY(%s)",
            (ids,),
        )
        subscriptions = conn.execute(
            "SELECT customer_id, plan_code, starts_at, ends_at FROM subscriptions"
            " WHERE customer_id = ANY(%s) ORDER BY customer_id, starts_at",
            (ids,),
        )
    spans: dict[str, list[SubscriptionSpan]] = {}
    for customer_id, plan_code, starts_at, ends_at in subscriptions.fetchall():
        spans.setdefault(customer_id, []).append(SubscriptionSpan(plan_code, starts_at, ends_at))
    found = revision.fetchone()
    return {
        row[0]: CustomerContext(
            customer_id=row[0],
            timezone=row[1],
            anchor_day=row[2],
            starts_at=row[3],
            ends_at=row[4],
            spans=tuple(spans.get(row[0], ())),
            revision=int(found[0]) if found else 0,
        )
        for row in customers.fetchall()
    }


def _load_customers(ids: list[str]) -> dict[str, CustomerContext]:
    with db.connection() as conn:
        return read_contexts(conn, ids)


catalog = Catalog()
db.register_cache(catalog.clear)
