"""Credit notes: a finalized invoice that is voided is cancelled by a credit note.

The credit note is written in the transaction that voids the invoice, with the next number of
its own gapless sequence (`credit_notes`, apart from invoice numbers): voiding the same invoice
twice, or two invoices at once, gives one note each and numbers one after the other. Its lines
and totals are the invoice's, negated (quantities stay as billed: they are what is credited).
A draft that is voided was never issued, so it gets none.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from services import billing_details
from storage import db
from storage.invoices import credit_notes as rows
from storage.invoices import writes
from storage.invoices.credit_notes import CreditNote, by_invoice, get_credit_note
from storage.invoices.records import Invoice

__all__ = ["CreditNote", "by_invoice", "get_credit_note", "issue_for_void", "list_credit_notes"]

SEQUENCE = "credit_notes"
VOID_REASON = "invoice voided"


def list_credit_notes(customer_id: str | None = None) -> list[CreditNote]:
    """Credit notes by number, optionally of one customer."""
    return rows.list_credit_notes(customer_id=customer_id)


def issue_for_void(conn: db.Connection, invoice: Invoice, at: datetime) -> CreditNote:
    """The credit note cancelling `invoice` (finalized, being voided on `conn`'s transaction)."""
    document = invoice.to_json()
    details = dict(invoice.issued_details or billing_details.current(invoice, conn=conn))
    details["seller"] = billing_details.seller()
    details.pop("payment_terms_days", None)
    details["issue_date"] = billing_details.due_date(at, invoice.timezone, 0)[0].isoformat()
    body = {
        "invoice_number": invoice.number,
        "invoice_issue_date": document["issue_date"],
        "period": document["period"],
        "period_start": document["period_start"],
        "period_end": document["period_end"],
        "timezone": document["timezone"],
        "plan": document["plan"],
        "plan_version": document["plan_version"],
        "lines": [negate_line(line) for line in document["lines"]],
        "subtotal": negate(document["subtotal"]),
        "tax": negate(document["tax"]),
        "total": negate(document["total"]),
    }
    return rows.insert(
        conn,
        {
            "id": f"cn_{secrets.token_hex(8)}",
            "number": writes.next_number(conn, SEQUENCE),
            "invoice_id": invoice.id,
            "customer_id": invoice.customer_id,
            "currency": invoice.currency,
            "subtotal": -invoice.subtotal,
            "tax": -invoice.tax,
            "total": -invoice.total,
            "reason": VOID_REASON,
            "document": body,
            "issued_at": at,
            "issued_details": details,
        },
    )


def negate(text: str | None) -> str | None:
    """A decimal string negated, zero staying "0.00" (never "-0.00")."""
    if text is None:
        return None
    value = Decimal(text)
    return text if value.is_zero() else format(-value, "f")


def negate_line(line: dict[str, Any]) -> dict[str, Any]:
    """An invoice line with its amount (and its tiers' amounts) negated."""
    result = dict(line)
    result["amount"] = negate(line["amount"])
    if "tiers" in line:
        result["tiers"] = [{**tier, "amount": negate(tier["amount"])} for tier in line["tiers"]]
    return result
