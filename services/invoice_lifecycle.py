"""Invoices: one per customer × billing period, computed from the durable rollups (never Redis).

Generating is idempotent. The inputs (rollup snapshots, the customer's other invoices) are read
and the invoice composed with no lock held; then it is written in one short transaction under a
per-customer advisory lock, after checking that those inputs have not changed meanwhile (else it
starts over). A draft is recomputed in place; a finalized, paid or void invoice never changes.
The partial unique index on (customer_id, period_start) WHERE status <> 'void' backs this up:
one live invoice per customer × period, whatever the retries. Numbers are given at finalization
from one counter row updated in the same transaction as the status, so a rollback leaves no gap.

This module is the public API: reading (`storage.invoices.records`), generating
(`services.invoicing`) and, here, the lifecycle: which status may follow which
(draft → finalized → paid; draft or finalized → void; void → reissued as a new draft).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pricing.invoicing import version_key
from services import billing_details, credit_notes
from services.invoicing import generate, refresh_after_late_usage
from services.notifications import notify_invoice_finalized
from services.periods import billing_interval, period_of
from storage import db
from storage.catalog.cache import customer_context
from storage.errors import Conflict
from storage.invoices import records, writes
from storage.invoices.records import (
    Invoice,
    find_invoice,
    get_invoice,
    list_invoices,
    locked_invoice,
    resolve_invoice_id,
)

__all__ = [
    "Invoice",
    "billing_interval",
    "customer_context",
    "finalize",
    "finalize_due",
    "find_invoice",
    "generate",
    "get_invoice",
    "list_invoices",
    "mark_paid",
    "period_of",
    "refresh_after_late_usage",
    "reissue",
    "resolve_invoice_id",
    "void",
]

#: status → the statuses it may be reached from (by `mark_paid` and `void`).
ALLOWED_FROM = {"paid": ("finalized",), "void": ("draft", "finalized")}


def finalize(
    invoice_id: str, *, now: datetime | None = None, conn: db.Connection | None = None
) -> Invoice:
    """Give a draft the next invoice number and make it final (a no-op on a final invoice).

    The number comes from the counter row, whose lock is held until this transaction ends:
    finalizations take numbers one after the other, and a rollback gives the number back.
    The `invoice.finalized` notification is written in the same transaction (once: a retry
    finds the invoice final and writes nothing, and the outbox keys it by the invoice).
    """
    with db.transaction(conn) as tx:
        invoice = locked_invoice(tx, invoice_id)
        if invoice.status in ("finalized", "paid"):
            return invoice
        if invoice.status == "void":
            raise Conflict(f"invoice {invoice_id!r} is void: it cannot be finalized")
        at = now or datetime.now(UTC)
        details, due = billing_details.issue(invoice, at, tx)
        final = writes.set_finalized(
            tx, invoice_id, writes.next_number(tx), at, issued_details=details, due_date=due
        )
        notify_invoice_finalized(tx, final)
        return final


def finalize_due(now: datetime | None = None) -> list[Invoice]:
    """Finalize every draft whose grace period is over, in period order.

    A draft whose rollups moved since it was computed (late usage whose refresh has not run)
    is recomputed first, so what becomes final is what the rollups say.
    """
    now = now or datetime.now(UTC)
    due, current = records.drafts_due(now)
    finalized = []
    for invoice in due:
        target = invoice
        if _is_stale(invoice, current):
            target = generate(invoice.customer_id, invoice.period_start, now=now)
        if target.status == "draft":
            finalized.append(finalize(target.id, now=now))
    return finalized


def _is_stale(invoice: Invoice, current: dict[tuple[str, str], int]) -> bool:
    """Whether a segment of the invoice has a rollup version above the one it priced."""
    for recorded in invoice.segments:
        key = version_key(datetime.fromisoformat(recorded["start"]))
        if current.get((invoice.customer_id, key), 0) > int(invoice.rollup_versions.get(key, 0)):
            return True
    return False


def mark_paid(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """A finalized invoice has been paid (a no-op when it already is)."""
    return _transition(invoice_id, "paid", "paid_at", now)


def void(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """Cancel a draft or finalized invoice; it keeps its number, and its customer × period
    can be invoiced again (`reissue`). A paid invoice cannot be voided. A finalized one (it
    was issued) is cancelled by a credit note, written in the same transaction
    (`services.credit_notes`)."""
    return _transition(invoice_id, "void", "voided_at", now)


def reissue(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """A new invoice for the period of a void one (the live one, if it was reissued already)."""
    invoice = get_invoice(invoice_id)
    if invoice.status != "void":
        raise Conflict(
            f"invoice {invoice_id!r} is {invoice.status}: only a void invoice can be reissued"
        )
    return generate(invoice.customer_id, invoice.period_start, now=now)


def _transition(invoice_id: str, status: str, stamp: str, now: datetime | None) -> Invoice:
    allowed = ALLOWED_FROM[status]
    with db.connection() as conn, conn.transaction():
        invoice = locked_invoice(conn, invoice_id)
        if invoice.status == status:
            return invoice
        if invoice.status not in allowed:
            raise Conflict(
                f"invoice {invoice_id!r} is {invoice.status}: it cannot become {status}"
                f" (only from {' or '.join(allowed)})"
            )
        at = now or datetime.now(UTC)
        changed = writes.set_status(conn, invoice_id, status, stamp, at)
        if status == "void" and invoice.status == "finalized":
            credit_notes.issue_for_void(conn, invoice, at)
        return changed
