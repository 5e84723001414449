"""A plan with limits and a spend cap over tiered pricing, and a customer on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pricing.plans import load_plan
from services.customers import create_customer
from storage.catalog.plans import apply_plan

PLAN = """
code: capped
name: Capped
currency: USD
base_fee: "10.00"
metrics:
  api_calls: {aggregation: sum}
  requests:  {aggregation: count, event: api_calls}
  peak_gb:   {aggregation: max, event: storage}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 100, unit_amount: "0"}
      - {up_to: 200, unit_amount: "0.10"}
      - {up_to: null, unit_amount: "0.05"}
  - {metric: peak_gb, model: standard, unit_amount: "1.00", included: 5}
limits:
  api_calls: {hard_limit: 300, throttle_at: "0.95"}
  peak_gb: {hard_limit: 50}
spend_cap: "25.00"
"""


def setup_capped(customer_id: str = "cus_1", plan: str = PLAN) -> None:
    apply_plan(load_plan(plan))
    create_customer(
        customer_id, load_plan(plan).code, starts_at=datetime.now(UTC) - timedelta(days=60)
    )
