"""A customer's subscription history cut into segments: which plan is in force at an instant,
and the pieces of a billing period (one per plan the customer was on in it).

Pure: the plans come from a lookup the caller passes (`storage.catalog.cache.Catalog.plan`,
which caches them), so the same rules serve ingest, live usage and invoicing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pricing.metering import Segment
from pricing.periods import Period, billing_period
from pricing.plans import Plan

#: A plan code → its latest (plan, version).
PlanLookup = Callable[[str], tuple[Plan, int]]


@dataclass(frozen=True)
class SubscriptionSpan:
    plan_code: str
    starts_at: datetime
    ends_at: datetime | None


@dataclass(frozen=True)
class CustomerContext:
    customer_id: str
    timezone: str
    anchor_day: int | None
    starts_at: datetime
    ends_at: datetime | None
    spans: tuple[SubscriptionSpan, ...]
    # The history revision (storage.ledger.locks) read before the rest: this context is at
    # least as new as that revision.
    revision: int = 0

    def span_at(self, at: datetime) -> SubscriptionSpan | None:
        for span in self.spans:
            if span.starts_at <= at and (span.ends_at is None or at < span.ends_at):
                return span
        return None


def segment_at(context: CustomerContext, at: datetime, plan_of: PlanLookup) -> Segment | None:
    """The billing period segment and plan in force for a customer at `at` (None before the
    customer started, after it ended, or outside every subscription)."""
    span = context.span_at(at)
    if span is None:
        return None
    plan, version = plan_of(span.plan_code)
    period = billing_period(
        at, timezone=context.timezone, anchor_day=context.anchor_day, interval=plan.interval
    )
    start = max(period.start, span.starts_at, context.starts_at)
    end = min(b for b in (period.end, span.ends_at, context.ends_at) if b is not None)
    if not start <= at < end:
        return None
    return Segment(plan, version, period, start, end, context.timezone)


def segments_of(context: CustomerContext, period: Period, plan_of: PlanLookup) -> list[Segment]:
    """Every segment of a billing period: one per subscription span that overlaps it,
    clipped to the period and to the customer's starts_at/ends_at, oldest first. Each
    starts where ingest keys its rollups: max(period start, span start)."""
    found: list[Segment] = []
    for span in context.spans:
        start = max(period.start, span.starts_at, context.starts_at)
        ends = (period.end, span.ends_at, context.ends_at)
        end = min(bound for bound in ends if bound is not None)
        if start >= end:
            continue
        plan, version = plan_of(span.plan_code)
        found.append(Segment(plan, version, period, start, end, context.timezone))
    return found
