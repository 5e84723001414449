"""Who bills whom, and when an invoice is due: the parties and terms printed on invoices.

The seller comes from the settings (METER_SELLER_*), the customer's name, billing address and
email from its row, and the payment terms from the customer, else its plan, else the seller's
default (METER_PAYMENT_TERMS_DAYS). When an invoice is finalized they are fixed on it
(`issue`), so a document that was sent never changes when the settings or the customer do;
a draft shows them as they are now (`current`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from pricing.periods import local_date
from pricing.plans import Plan
from storage import db
from storage.catalog.cache import catalog
from storage.catalog.customers import Customer, get_customer
from storage.errors import NotFound
from storage.invoices.records import Invoice
from storage.settings import Settings, get_settings


def address_lines(text: str | None) -> list[str]:
    """An address as its lines: split at newlines (or a literal "\\n"), blank lines dropped."""
    if not text:
        return []
    lines = text.replace("\\n", "\n").splitlines()
    return [line.strip() for line in lines if line.strip()]


def seller(settings: Settings | None = None) -> dict[str, Any]:
    """The seller as the settings say now."""
    settings = settings or get_settings()
    return {
        "name": settings.METER_SELLER_NAME,
        "address": address_lines(settings.METER_SELLER_ADDRESS),
        "tax_id": settings.METER_SELLER_TAX_ID,
        "email": settings.METER_SELLER_EMAIL,
        "payment_instructions": settings.METER_PAYMENT_INSTRUCTIONS,
    }


def bill_to(customer_id: str, customer: Customer | None) -> dict[str, Any]:
    """The customer's billing details (its id alone when the row is gone)."""
    return {
        "customer_id": customer_id,
        "name": customer.name if customer else None,
        "address": address_lines(customer.billing_address if customer else None),
        "email": customer.email if customer else None,
    }


def payment_terms(customer: Customer | None, plan: Plan | None, settings: Settings) -> int:
    """Net days: the customer's own, else its plan's, else the seller's default."""
    if customer is not None and customer.payment_terms_days is not None:
        return customer.payment_terms_days
    if plan is not None and plan.payment_terms_days is not None:
        return plan.payment_terms_days
    return settings.METER_PAYMENT_TERMS_DAYS


def due_date(issued_at: datetime, timezone: str, terms_days: int) -> tuple[date, date]:
    """(issue date, due date): the local day of issue in the customer's zone, plus the terms."""
    issue = local_date(issued_at, timezone)
    return issue, issue + timedelta(days=terms_days)


def current(invoice: Invoice, *, conn: db.Connection | None = None) -> dict[str, Any]:
    """The parties and terms an invoice would be issued with now (no issue or due date)."""
    settings = get_settings()
    customer = _customer(invoice.customer_id, conn)
    plan = catalog.plan_version(invoice.plan_code, invoice.plan_version)
    return {
        "seller": seller(settings),
        "bill_to": bill_to(invoice.customer_id, customer),
        "payment_terms_days": payment_terms(customer, plan, settings),
    }


def issue(invoice: Invoice, at: datetime, conn: db.Connection) -> tuple[dict[str, Any], date]:
    """What a finalization at `at` fixes on the invoice: the parties, the terms and the issue
    date (in `issued_details`), and the due date."""
    details = current(invoice, conn=conn)
    issued, due = due_date(at, invoice.timezone, details["payment_terms_days"])
    details["issue_date"] = issued.isoformat()
    return details, due


def _customer(customer_id: str, conn: db.Connection | None) -> Customer | None:
    try:
        return get_customer(customer_id, conn=conn)
    except NotFound:
        return None
