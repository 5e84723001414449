"""Shared set-up for metering tests: a plan, a customer, batches, and the consistency check
that every invariant test ends with (ledger = rollups = counters = offline pricing)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pricing.metering import segment_usage
from pricing.periods import billing_period
from pricing.plans import load_plan
from pricing.rating import usage_from_events
from services.customers import create_customer
from services.usage import current_usage
from storage.catalog.cache import catalog
from storage.catalog.plans import apply_plan
from storage.ledger import events as ledger
from storage.usage import counters, rollups

PLAN = """
code: live
name: Live
currency: USD
base_fee: "10.00"
metrics:
  api_calls:  {aggregation: sum}
  requests:   {aggregation: count, event: api_calls}
  eu_calls:   {aggregation: sum, event: api_calls, filter: {region: [eu]}}
  peak_gb:    {aggregation: max, event: storage}
  disk:       {aggregation: latest, event: storage}
  gb_time:    {aggregation: weighted_sum, event: storage_delta}
  seats:      {aggregation: unique_count, event: login, field: user_id}
  payments:   {aggregation: sum, field: amount}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 100, unit_amount: "0"}
      - {up_to: 1000, unit_amount: "0.01"}
      - {up_to: null, unit_amount: "0.005"}
  - {metric: requests, model: package, package_size: 50, package_amount: "1.00"}
  - {metric: eu_calls, model: standard, unit_amount: "0.002"}
  - {metric: peak_gb, model: standard, unit_amount: "0.10", included: 5}
  - {metric: disk, model: standard, unit_amount: "0.01"}
  - {metric: gb_time, model: standard, unit_amount: "0.50"}
  - metric: seats
    model: volume
    tiers: [{up_to: 3, unit_amount: "5"}, {up_to: null, unit_amount: "4"}]
  - metric: payments
    model: percentage
    rate_percent: "1.3"
    fixed_amount: "0.30"
    free_events: 2
    free_amount: "100"
    per_event_min: "0.50"
    per_event_max: "12.00"
"""

_ids = itertools.count()


def period_start(at: datetime | None = None) -> datetime:
    """Start of the (UTC calendar) billing period of the test plan that holds `at` (now)."""
    return billing_period(at or datetime.now(UTC)).start


def in_previous_period(at: datetime | None = None) -> datetime:
    """An instant in the period before the one holding `at` (now): an hour before the
    boundary, so always inside the accepted window (35 days back), whatever today is."""
    return period_start(at) - timedelta(hours=1)


def setup_customer(customer_id: str = "cus_1", starts_days_ago: int = 60) -> None:
    apply_plan(load_plan(PLAN))
    create_customer(
        customer_id, "live", starts_at=datetime.now(UTC) - timedelta(days=starts_days_ago)
    )


def event(
    metric: str = "api_calls",
    quantity: Any = "1",
    *,
    customer_id: str = "cus_1",
    event_id: str | None = None,
    at: datetime | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"e{next(_ids)}",
        "customer_id": customer_id,
        "metric": metric,
        "quantity": str(quantity),
        "timestamp": (at or datetime.now(UTC)).isoformat(),
        "properties": properties or {},
    }


def batch(events: list[dict[str, Any]], batch_id: str | None = None) -> dict[str, Any]:
    return {"batch_id": batch_id or f"b{next(_ids)}", "events": events}


def assert_consistent(
    customer_id: str = "cus_1", at: datetime | None = None, *, require_live: bool = True
) -> dict[str, Decimal]:
    """Ledger = rollups = counters = offline pricing, for the customer's segment at `at`.

    The counters in Redis are compared as they are, before any rebuild; `require_live` says
    they must be there (not left for the next read to rebuild). Returns the quantities."""
    at = at or datetime.now(UTC)
    context = catalog.customers({customer_id})[customer_id]
    segment = catalog.segment(context, at)
    assert segment is not None
    plan = segment.plan
    events = ledger.events_between(customer_id, segment.start, segment.end)
    offline = usage_from_events(plan, events, segment.weighting_period)

    snap = rollups.snapshot(customer_id, segment.start)
    for key, metric in plan.metrics.items():
        if metric.aggregation == "unique_count":
            from_rollup = Decimal(len(snap.uniques.get(key, ())))
        else:
            state = snap.state.metrics.get(key)
            from_rollup = state.value(metric, segment.weighting_period) if state else Decimal(0)
        assert from_rollup == offline[key].quantity, f"rollup {key}"

    unique_metrics = [k for k, m in plan.metrics.items() if m.aggregation == "unique_count"]
    live = counters.read_segment(customer_id, segment.start, unique_metrics)
    assert live is not None or not require_live, "counters missing or gapped in Redis"
    if live is not None:  # the counters in Redis themselves, before any rebuild
        assert live.version == snap.version
        usage, _ = segment_usage(plan, live.state, live.unique_counts, segment)
        for key in plan.metrics:
            assert usage[key].quantity == offline[key].quantity, f"redis {key}"
    report = current_usage(customer_id, at)
    for key in plan.metrics:
        assert report.metrics[key].used == offline[key].quantity, f"counter {key}"
    from pricing.rating import rate

    expected = rate(plan, offline)
    assert report.quote.total == expected.total
    return {key: offline[key].quantity for key in plan.metrics}
