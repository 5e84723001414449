"""What an invoice or a credit note says to the customer, ready to render (HTML or PDF).

`invoice_document` and `credit_note_document` gather the parts: the seller and the customer
(fixed on the invoice when it was finalized; as they are now for a draft), the dates and terms,
the lines in plain words (`pricing.wording`, with the charges of the plan versions that priced
them), the tax with its rate and the totals formatted for the currency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pricing.charges import Charge
from pricing.money import minor_unit, round_money
from pricing.periods import local_date
from pricing.plans import Plan
from pricing.wording import Row, describe_line, money, percent
from services import billing_details
from storage.catalog.cache import catalog
from storage.errors import NotFound
from storage.invoices.credit_notes import CreditNote
from storage.invoices.records import Invoice


@dataclass(frozen=True)
class Document:
    """An invoice or credit note as printed. `banner` is the status shown large (DRAFT, VOID,
    PAID, CREDIT NOTE); `facts` the labelled values at the top; `totals` the rows under the
    lines, the last one the amount due (or credited)."""

    kind: str
    title: str
    status: str
    banner: str | None
    seller: Mapping[str, Any]
    bill_to: Mapping[str, Any]
    facts: list[tuple[str, str]]
    rows: list[Row]
    totals: list[tuple[str, str]]
    currency: str
    notes: list[str] = field(default_factory=list)
    file_name: str = "invoice"


def long_date(value: date | str | None) -> str:
    """'1 Feb 2026'."""
    if value is None:
        return ""
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{day.day} {day:%b %Y}"


def period_text(document: Mapping[str, Any]) -> str:
    """'1 Jan 2026 – 31 Jan 2026': the period's first and last local days (and the time zone
    they are days of, when it is not UTC)."""
    timezone = document.get("timezone") or "UTC"
    first = local_date(datetime.fromisoformat(document["period_start"]), timezone)
    after = local_date(datetime.fromisoformat(document["period_end"]), timezone)
    last = date.fromordinal(after.toordinal() - 1)
    zone = "" if timezone == "UTC" else f" ({timezone})"
    return f"{long_date(first)} – {long_date(last)}{zone}"


def terms_text(days: int | None) -> str:
    if days is None:
        return ""
    return "due on receipt" if days == 0 else f"net {days} days"


def invoice_document(
    invoice: Invoice, *, credit_note: CreditNote | None = None, now: datetime | None = None
) -> Document:
    """The invoice as the customer reads it."""
    doc = invoice.to_json()
    details = invoice.issued_details or billing_details.current(invoice)
    currency = invoice.currency
    facts = _invoice_facts(invoice, doc, details)
    banner = {"draft": "DRAFT", "void": "VOID", "paid": "PAID"}.get(invoice.status)
    notes = _invoice_notes(invoice, doc, details, credit_note, now or datetime.now(UTC))
    totals = _totals(doc, currency, "Total due" if invoice.status != "paid" else "Total paid")
    number = f"Invoice {invoice.number}" if invoice.number is not None else "Draft invoice"
    return Document(
        kind="invoice",
        title=number,
        status=invoice.status,
        banner=banner,
        seller=details.get("seller") or {},
        bill_to=details.get("bill_to") or {},
        facts=facts,
        rows=describe_lines(doc, currency),
        totals=totals,
        currency=currency,
        notes=notes,
        file_name=f"invoice-{invoice.number or invoice.id}",
    )


def credit_note_document(note: CreditNote) -> Document:
    """The credit note as the customer reads it: the cancelled invoice's lines, negated."""
    doc = note.to_json()
    facts = [
        ("Credit note", f"CN-{note.number}"),
        ("Issue date", long_date(doc.get("issue_date"))),
        ("Cancels invoice", _invoice_reference(doc)),
        ("Billing period", period_text(doc)),
        ("Reason", note.reason[:1].upper() + note.reason[1:]),
        ("Customer ID", note.customer_id),
    ]
    return Document(
        kind="credit_note",
        title=f"Credit note CN-{note.number}",
        status="credit_note",
        banner="CREDIT NOTE",
        seller=doc.get("seller") or {},
        bill_to=doc.get("bill_to") or {},
        facts=facts,
        rows=describe_lines(doc, note.currency),
        totals=_totals(doc, note.currency, "Total credited"),
        currency=note.currency,
        notes=[
            f"This credit note cancels invoice {_invoice_reference(doc)} in full. "
            "Nothing is due on that invoice; an amount already paid will be refunded or "
            "credited."
        ],
        file_name=f"credit-note-CN-{note.number}",
    )


def describe_lines(doc: Mapping[str, Any], currency: str) -> list[Row]:
    """The printed rows of a document's lines, each usage line with its plan's charge."""
    rows: list[Row] = []
    seen: dict[tuple[str, int], int] = {}
    for line in doc["lines"]:
        key = (
            str(line.get("plan", doc["plan"])),
            int(line.get("plan_version", doc["plan_version"])),
        )
        plan = _plan(*key)
        charge: Charge | None = None
        if line["kind"] == "usage" and plan is not None:
            index = seen.get(key, 0)
            seen[key] = index + 1
            charge = _matching(plan.charges, index, line)
        row = describe_line(
            line,
            currency,
            charge=charge,
            plan_name=plan.name if plan else key[0],
            interval=plan.interval if plan else "month",
            minimum_spend=plan.minimum_spend if plan else None,
        )
        if row is not None and row.kind == "usage" and "plan" in line:
            under = f"under {plan.name if plan else key[0]}"
            row = replace(row, detail=f"{row.detail}, {under}" if row.detail else under)
        if row is not None:
            rows.append(row)
    return rows


def _matching(charges: Sequence[Charge], index: int, line: Mapping[str, Any]) -> Charge | None:
    if index < len(charges):
        charge = charges[index]
        if charge.metric == line.get("metric") and charge.model == line.get("model"):
            return charge
    return None


def _plan(code: str, version: int) -> Plan | None:
    try:
        return catalog.plan_version(code, version)
    except NotFound:
        return None


def tax_label(doc: Mapping[str, Any], currency: str) -> str | None:
    """'Tax (10%)', or each rate with what it taxes when lines fall under several; None when
    nothing is taxed (no rate, no tax). A line is taxed at the rate of the plan it names (or
    the invoice's plan), as `pricing.invoicing.compose` taxed it."""
    bases: dict[Decimal, Decimal] = {}
    for line in doc["lines"]:
        plan = _plan(
            str(line.get("plan", doc["plan"])), int(line.get("plan_version", doc["plan_version"]))
        )
        rate = plan.tax_rate if plan else Decimal(0)
        bases[rate] = bases.get(rate, Decimal(0)) + Decimal(line["amount"])
    tax = Decimal(doc["tax"] or 0)
    if tax.is_zero() and not any(bases):
        return None
    if sum(round_money(base * rate, currency) for rate, base in bases.items()) != tax:
        # A line whose plan the document does not name (an old adjustment): the rates are
        # shown, not a breakdown that would not add up to the tax charged.
        return f"Tax ({', '.join(percent(rate) for rate in sorted(bases))})"
    if len(bases) == 1:
        return f"Tax ({percent(next(iter(bases)))})"
    parts = [f"{percent(rate)} of {money(base, currency)}" for rate, base in bases.items()]
    return f"Tax ({'; '.join(parts)})"


def _totals(doc: Mapping[str, Any], currency: str, last: str) -> list[tuple[str, str]]:
    rows = [("Subtotal", money(doc["subtotal"], currency))]
    label = tax_label(doc, currency)
    if label is not None:
        rows.append((label, money(doc["tax"], currency)))
    rows.append((last, f"{currency} {money(doc['total'], currency)}"))
    return rows


def _invoice_facts(
    invoice: Invoice, doc: Mapping[str, Any], details: Mapping[str, Any]
) -> list[tuple[str, str]]:
    terms = details.get("payment_terms_days")
    if invoice.number is None:
        facts = [
            ("Invoice number", "given when issued"),
            ("Issue date", "when finalized"),
            ("Due date", f"{terms} days after issue" if terms else "on issue"),
        ]
    else:
        facts = [
            ("Invoice number", str(invoice.number)),
            ("Issue date", long_date(details.get("issue_date"))),
            ("Due date", long_date(invoice.due_date)),
        ]
    facts += [
        ("Payment terms", terms_text(terms)),
        ("Billing period", period_text(doc)),
        ("Plan", _plan_names(doc)),
        ("Customer ID", invoice.customer_id),
    ]
    if invoice.paid_at is not None:
        facts.append(("Paid", long_date(local_date(invoice.paid_at, invoice.timezone))))
    if invoice.replaces:
        facts.append(("Replaces", invoice.replaces))
    return [(label, value) for label, value in facts if value]


def _plan_names(doc: Mapping[str, Any]) -> str:
    names = []
    for segment in doc.get("segments") or [
        {"plan": doc["plan"], "plan_version": doc["plan_version"]}
    ]:
        plan = _plan(segment["plan"], int(segment["plan_version"]))
        name = plan.name if plan else segment["plan"]
        if len(doc.get("segments") or []) > 1:
            name += f" ({segment['days']} of {segment['period_days']} days)"
        if name not in names:
            names.append(name)
    return ", then ".join(names)


def _invoice_notes(
    invoice: Invoice,
    doc: Mapping[str, Any],
    details: Mapping[str, Any],
    credit_note: CreditNote | None,
    now: datetime,
) -> list[str]:
    notes = []
    if invoice.status == "draft":
        text = (
            "Draft — not a request for payment. Amounts may still change with late usage; "
            "the invoice gets its number and due date when it is finalized"
        )
        if invoice.grace_until is not None and invoice.grace_until > now:
            when = invoice.grace_until.astimezone(UTC)
            text += f", not before {long_date(when.date())} {when:%H:%M} UTC"
        notes.append(text + ".")
    elif invoice.status == "void":
        text = "This invoice is void: nothing is due on it."
        if credit_note is not None:
            text = f"This invoice is void and cancelled by credit note CN-{credit_note.number}."
        notes.append(text)
    instructions = (details.get("seller") or {}).get("payment_instructions")
    if instructions and invoice.status == "finalized":
        notes.append(f"How to pay: {instructions}")
    digits = minor_unit(invoice.currency)
    tiers = [Decimal(t["amount"]) for line in doc["lines"] for t in line.get("tiers", [])]
    if any(amount != round(amount, digits) for amount in tiers):
        notes.append("Tier amounts show all their digits; each line is rounded once.")
    return notes


def _invoice_reference(doc: Mapping[str, Any]) -> str:
    number = doc.get("invoice_number")
    issued = doc.get("invoice_issue_date")
    text = f"{number}" if number is not None else str(doc.get("invoice_id"))
    return f"{text} (issued {long_date(issued)})" if issued else text
