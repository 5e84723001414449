"""A known set of customers, usage and invoices over January and February 2026.

Plan `small` (USD, base 100.00, tax 10%, api_calls: 100 free then 0.10) and `euro` (EUR, base
20.00, api_calls: 1,000 included then 0.02). Subtotals (before tax):

- a (small): January 300 calls, 100 + 20 = 120.00. February 1,100 calls, 100 + 100 = 200.00,
  plus a late January event (100 calls) billed as an adjustment of 10.00: 210.00.
- b (small): January 600 calls, 100 + 50 = 150.00. February 50 calls, 100.00: finalized,
  voided, reissued and finalized again.
- c (small): January no usage, 100.00; cancelled at February 1: no February invoice (churned).
- n (small): starts February 1; February no usage, 100.00 (new).
- d (small): starts February 1; February's invoice stays a draft (not revenue).
- e (euro): January 3,000 calls, 20 + 40 = 60.00 EUR. February 500 calls, 20.00 EUR.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pricing.plans import load_plan
from services import invoice_lifecycle as invoices
from services.customers import cancel
from storage.catalog.plans import apply_plan
from tests.billing.helpers import customer, event, ingest, install_plans

EURO = """
code: euro
name: Euro
currency: EUR
base_fee: "20.00"
metrics:
  api_calls: {aggregation: sum}
charges:
  - {metric: api_calls, model: standard, unit_amount: "0.02", included: 1000}
"""

JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)
#: When the invoices are generated and finalized: after both months ended.
LATER = datetime(2026, 3, 2, tzinfo=UTC)


def utc(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def calls(customer_id: str, at: datetime, quantity: int) -> dict[str, Any]:
    return event(customer_id, at, "api_calls", quantity)


def build() -> dict[str, str]:
    """Create the scenario; returns the invoice ids by 'customer:YYYY-MM'."""
    install_plans()
    apply_plan(load_plan(EURO))
    for name in ("a", "b", "c"):
        customer(name, "small", starts_at=datetime(2025, 12, 1, tzinfo=UTC))
    customer("e", "euro", starts_at=datetime(2025, 12, 1, tzinfo=UTC))
    for name in ("n", "d"):
        customer(name, "small", starts_at=FEBRUARY)
    ingest([calls("a", utc(1, 5), 300), calls("b", utc(1, 6), 600), calls("e", utc(1, 7), 3000)])
    cancel("c", FEBRUARY, now=utc(1, 31))
    ids: dict[str, str] = {}
    for name in ("a", "b", "c", "e"):
        invoice = invoices.generate(name, JANUARY, now=utc(2, 1, 6))
        ids[f"{name}:2026-01"] = invoices.finalize(invoice.id, now=utc(2, 1, 8)).id
    # Late usage for January, after its invoice is final: an adjustment on February's.
    ingest([calls("a", utc(1, 20), 100)], now=utc(2, 10))
    ingest([calls("a", utc(2, 5), 1100), calls("b", utc(2, 6), 50), calls("e", utc(2, 7), 500)])
    for name in ("a", "b", "n", "e"):
        invoice = invoices.generate(name, FEBRUARY, now=LATER)
        ids[f"{name}:2026-02"] = invoices.finalize(invoice.id, now=LATER).id
    voided = invoices.void(ids["b:2026-02"], now=LATER)
    reissued = invoices.reissue(voided.id, now=LATER)
    ids["b:2026-02"] = invoices.finalize(reissued.id, now=LATER).id
    ids["d:2026-02"] = invoices.generate("d", FEBRUARY, now=LATER).id
    return ids
