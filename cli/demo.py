"""`meter demo`: the system end to end on the embedded servers (or the configured ones)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from cli.output import console
from cli.quote import print_quote

EXAMPLE_PLANS = Path(__file__).resolve().parent.parent / "examples" / "plans"

DEMO_CUSTOMERS = [
    ("acme", "api", "UTC", None),
    ("globex", "growth", "America/New_York", None),
    ("initech", "team", "Europe/Berlin", 15),
    ("hooli", "payments", "Asia/Tokyo", None),
]


def demo() -> None:
    """Plans, customers and prices on the embedded PostgreSQL and Redis."""
    from pricing.charges.base import MetricUsage
    from pricing.plans import load_plan
    from pricing.rating import rate
    from storage.customers import create_customer, get_customer
    from storage.errors import NotFound
    from storage.plans import apply_plan, get_plan

    console.rule("[bold]Meterline demo")
    console.print("1. Plans are files: validating and storing examples/plans/*.yaml")
    for path in sorted(EXAMPLE_PLANS.glob("*.yaml")):
        version, created = apply_plan(load_plan(path.read_text()))
        state = "new version" if created else "unchanged"
        console.print(f"   {path.name:<16} -> version {version} ({state})")

    console.print("2. Customers, each in its own time zone")
    for customer_id, plan_code, timezone, anchor in DEMO_CUSTOMERS:
        try:
            get_customer(customer_id)
            console.print(f"   {customer_id:<8} exists")
        except NotFound:
            create_customer(customer_id, plan_code, timezone=timezone, anchor_day=anchor)
            console.print(f"   {customer_id:<8} created on {plan_code} ({timezone})")

    console.print("3. What 150,000 API calls cost under the API plan (the original problem)")
    plan, _ = get_plan("api")
    quote = rate(
        plan,
        {
            "api_calls": MetricUsage(quantity=Decimal(150000), events=None),
            "storage_gb": MetricUsage(quantity=Decimal(42), events=None),
            "bandwidth_gb": MetricUsage(quantity=Decimal("130.5"), events=None),
        },
    )
    print_quote(quote.to_json())
    console.rule("done")
