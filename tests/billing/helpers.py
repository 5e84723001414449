"""Set-up for billing tests: plans, customers, and usage ingested at a chosen moment.

Usage goes in through `services.ingest.ingest_batch` (the ingest actor's own path) with `now`
set just after the events, so any past period can be filled as if the events arrived on time
(or late, by choosing a later `now`).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from pricing.plans import Plan, load_plan
from services.customers import create_customer
from services.ingest import IngestOutcome, ingest_batch
from storage.catalog.plans import apply_plan

SMALL = """
code: small
name: Small
currency: USD
base_fee: "100.00"
tax_rate: "0.10"
metrics:
  api_calls:  {aggregation: sum}
  storage_gb: {aggregation: max}
  seats:      {aggregation: unique_count, field: user_id}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 100, unit_amount: "0"}
      - {up_to: null, unit_amount: "0.10"}
  - {metric: storage_gb, model: standard, unit_amount: "0.50", included: 5}
  - metric: seats
    model: volume
    tiers: [{up_to: 3, unit_amount: "5"}, {up_to: null, unit_amount: "4"}]
"""

BIG = """
code: big
name: Big
currency: USD
base_fee: "200.00"
tax_rate: "0.10"
metrics:
  api_calls:  {aggregation: sum}
  storage_gb: {aggregation: max}
  seats:      {aggregation: unique_count, field: user_id}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 1000, unit_amount: "0"}
      - {up_to: null, unit_amount: "0.05"}
  - {metric: storage_gb, model: standard, unit_amount: "0.25", included: 10}
  - metric: seats
    model: volume
    tiers: [{up_to: 10, unit_amount: "3"}, {up_to: null, unit_amount: "2"}]
"""

FLOOR = """
code: floor
name: Floor
currency: USD
minimum_spend: "50.00"
metrics:
  api_calls: {aggregation: sum}
charges:
  - {metric: api_calls, model: standard, unit_amount: "0.10"}
"""

_ids = itertools.count()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def plan(text: str = SMALL) -> Plan:
    return load_plan(text)


def install_plans() -> None:
    for text in (SMALL, BIG, FLOOR):
        apply_plan(load_plan(text))


def customer(
    customer_id: str,
    plan_code: str = "small",
    *,
    starts_at: datetime,
    timezone: str = "UTC",
    anchor_day: int | None = None,
) -> None:
    create_customer(
        customer_id, plan_code, timezone=timezone, anchor_day=anchor_day, starts_at=starts_at
    )


def event(
    customer_id: str,
    at: datetime,
    metric: str = "api_calls",
    quantity: Any = 1,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "event_id": f"ev{next(_ids)}",
        "customer_id": customer_id,
        "metric": metric,
        "quantity": str(quantity),
        "timestamp": at.isoformat(),
        "properties": properties or {},
    }


def ingest(events: list[dict[str, Any]], *, now: datetime | None = None) -> IngestOutcome:
    """Ingest a batch as if it arrived at `now` (default: an hour after its last event)."""
    arrival = now or max(datetime.fromisoformat(e["timestamp"]) for e in events) + timedelta(
        hours=1
    )
    outcome = ingest_batch(f"batch{next(_ids)}", events, now=arrival)
    assert outcome.accepted == len(events), outcome.rejected
    return outcome


def amounts(document: dict[str, Any]) -> list[tuple[str, str | None, Decimal]]:
    """(kind, metric, amount) of each line of an invoice's JSON."""
    return [
        (line["kind"], line.get("metric"), Decimal(line["amount"])) for line in document["lines"]
    ]


def deliver(broker: StubBroker, *, threads: int = 1) -> None:
    """Run a worker until the billing queue (and its delayed messages) is empty."""
    worker = Worker(broker, worker_timeout=20, worker_threads=threads)
    worker.start()
    try:
        broker.join("billing", fail_fast=False, timeout=60_000)
        worker.join()
    finally:
        worker.stop()
