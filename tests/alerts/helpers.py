"""Plans, customers and readers shared by the alert tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pricing.plans import load_plan
from services.customers import create_customer
from storage import db
from storage.catalog.plans import apply_plan
from tasks.ingest import ingest_events

#: 10,000 calls included (the free first tier), 100 GB of storage included.
PLAN = """
code: metered
name: Metered
currency: USD
metrics:
  api_calls:  {aggregation: sum}
  storage_gb: {aggregation: max, alerts: ["0.5"]}
  logins:     {aggregation: count}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 10000, unit_amount: "0"}
      - {up_to: 100000, unit_amount: "0.01"}
      - {up_to: null, unit_amount: "0.005"}
  - {metric: storage_gb, model: standard, unit_amount: "0.10", included: 100}
  - {metric: logins, model: standard, unit_amount: "0.001"}
"""

_ids = itertools.count()


def plan_text(code: str, *, free: int = 10000, price: str = "0.01", extra: str = "") -> str:
    """PLAN under another code, with `free` calls included and tier 2 at `price`."""
    text = PLAN.replace("code: metered", f"code: {code}")
    text = text.replace("up_to: 10000,", f"up_to: {free},").replace('"0.01"', f'"{price}"')
    return text + extra


def setup_customer(
    customer_id: str = "cus_a", plan: str = PLAN, starts_at: datetime | None = None
) -> str:
    loaded = load_plan(plan)
    apply_plan(loaded)
    create_customer(
        customer_id, loaded.code, starts_at=starts_at or datetime.now(UTC) - timedelta(days=60)
    )
    return customer_id


def calls(
    quantity: Any,
    *,
    customer_id: str = "cus_a",
    at: datetime | None = None,
    metric: str = "api_calls",
) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids)}",
        "customer_id": customer_id,
        "metric": metric,
        "quantity": str(quantity),
        "timestamp": (at or datetime.now(UTC)).isoformat(),
    }


def send(*events: dict[str, Any], batch_id: str | None = None) -> dict[str, Any]:
    """One batch through the ingest actor (in this process); returns the batch."""
    message = {"batch_id": batch_id or f"b{next(_ids)}", "events": list(events)}
    ingest_events(message)
    return message


def alert_rows(customer_id: str | None = None) -> list[dict[str, Any]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT a.id, a.customer_id, a.kind, a.metric, a.threshold, a.basis, a.period_start,"
            " a.value, a.outbox_id, o.topic, o.payload FROM alerts a"
            " LEFT JOIN outbox o ON o.id = a.outbox_id"
            " WHERE %(c)s::text IS NULL OR a.customer_id = %(c)s ORDER BY a.id",
            {"c": customer_id},
        ).fetchall()
    keys = ("id", "customer_id", "kind", "metric", "threshold", "basis", "period_start", "value",
            "outbox_id", "topic", "payload")  # fmt: skip
    return [dict(zip(keys, row, strict=True)) for row in rows]


def outbox_count() -> int:
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(row[0]) if row else 0


def fired(customer_id: str | None = None) -> list[tuple[str, str | None, Decimal]]:
    """(kind, metric, threshold) of the alerts, in the order they fired."""
    return [(r["kind"], r["metric"], r["threshold"]) for r in alert_rows(customer_id)]


D = Decimal
