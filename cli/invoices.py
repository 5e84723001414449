"""`meter invoices ...`: list and show invoices, write one as HTML or PDF, move it through its
lifecycle (finalize, mark-paid, void, reissue); the credit notes of voided invoices."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer

from cli.output import console, print_json, print_table

app = typer.Typer(help="Invoices: list, show, finalize, mark paid, void, reissue.")

_ID_HELP = "The invoice id, or a prefix of it that only one invoice has."


@app.callback()
def _group() -> None:
    """Invoices: one per customer × billing period."""


@app.command("list")
def list_invoices(
    customer: str | None = typer.Option(None, "--customer", help="Only this customer."),
    period: str | None = typer.Option(None, "--period", help="Only this period (YYYY-MM)."),
    status: str | None = typer.Option(None, "--status", help="draft, finalized, paid, void."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Invoices, oldest period first."""
    from services.credit_notes import by_invoice
    from services.invoice_lifecycle import list_invoices as find

    found = find(customer_id=customer, period_label=period, status=status)
    notes = by_invoice(i.id for i in found if i.status == "void")
    if as_json:
        print_json(
            [
                {**_summary(invoice.to_json()), "credit_note": _note_ref(notes.get(invoice.id))}
                for invoice in found
            ]
        )
        return
    print_table(
        f"Invoices ({len(found)})",
        ["id", "number", "customer", "period", "status", "plan", "total", "credit note"],
        [
            (
                i.id,
                i.number,
                i.customer_id,
                i.period_label,
                i.status,
                i.plan_code,
                f"{i.total} {i.currency}",
                f"CN-{notes[i.id].number}" if i.id in notes else "",
            )
            for i in found
        ],
        whole={"id", "customer"},
    )


@app.command("show")
def show(
    invoice_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    html: Path | None = typer.Option(None, "--html", help="Also write it as an HTML document."),
    pdf: Path | None = typer.Option(None, "--pdf", help="Also write it as a PDF document."),
) -> None:
    """One invoice: its lines with tiers, totals and status (and its credit note, if void)."""
    from services.credit_notes import by_invoice
    from services.invoice_lifecycle import get_invoice, resolve_invoice_id

    invoice = get_invoice(resolve_invoice_id(invoice_id))
    note = by_invoice([invoice.id]).get(invoice.id)
    document = invoice.to_json()
    document["credit_note"] = _note_ref(note)
    written = []
    if html is not None or pdf is not None:
        from services.documents.model import invoice_document

        written = _write(invoice_document(invoice, credit_note=note), html, pdf)
    if as_json:
        print_json(document)
        return
    _print_invoice(document)
    for path in written:
        console.print(f"written to {path}")


@app.command("credit-notes")
def credit_notes(
    customer: str | None = typer.Option(None, "--customer", help="Only this customer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Credit notes (each cancels a voided finalized invoice), by number."""
    from services.credit_notes import list_credit_notes

    found = list_credit_notes(customer)
    if as_json:
        print_json([note.to_json() for note in found])
        return
    print_table(
        f"Credit notes ({len(found)})",
        ["number", "id", "invoice", "invoice no.", "customer", "issued", "total"],
        [
            (
                f"CN-{n.number}",
                n.id,
                n.invoice_id,
                n.document.get("invoice_number"),
                n.customer_id,
                n.issued_at.date().isoformat(),
                f"{n.total} {n.currency}",
            )
            for n in found
        ],
        whole={"id", "invoice", "customer"},
    )


@app.command("credit-note")
def credit_note(
    key: str = typer.Argument(
        ..., metavar="KEY", help="Its number (7 or CN-7), its id, or the id of the invoice."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    html: Path | None = typer.Option(None, "--html", help="Also write it as an HTML document."),
    pdf: Path | None = typer.Option(None, "--pdf", help="Also write it as a PDF document."),
) -> None:
    """One credit note: the cancelled invoice's lines and totals, negated."""
    from services.credit_notes import get_credit_note

    note = get_credit_note(key)
    written = []
    if html is not None or pdf is not None:
        from services.documents.model import credit_note_document

        written = _write(credit_note_document(note), html, pdf)
    document = note.to_json()
    if as_json:
        print_json(document)
        return
    rows = [(_label(line), line.get("quantity", ""), line["amount"]) for line in document["lines"]]
    print_table(
        f"Credit note CN-{note.number} ({note.id}) — cancels invoice {note.invoice_id}"
        f" (no. {document.get('invoice_number')}) — {note.customer_id} ({note.currency})",
        ["line", "quantity", "amount"],
        rows,
    )
    console.print(
        f"subtotal {document['subtotal']}   tax {document['tax']}   "
        f"[bold]total {document['total']} {note.currency}[/bold]"
    )
    for path in written:
        console.print(f"written to {path}")


def _write(doc: Any, html: Path | None, pdf: Path | None) -> list[Path]:
    """Write the document as HTML and/or PDF; the paths written."""
    written = []
    if html is not None:
        from services.documents.html import render_html

        html.write_text(render_html(doc), encoding="utf-8")
        written.append(html)
    if pdf is not None:
        from services.documents.pdf import render_pdf

        pdf.write_bytes(render_pdf(doc))
        written.append(pdf)
    return written


def _note_ref(note: Any) -> dict[str, Any] | None:
    return None if note is None else {"id": note.id, "number": note.number}


@app.command("finalize")
def finalize(
    invoice_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Finalize a draft now (before its grace period ends): it gets the next number."""
    from services.invoice_lifecycle import finalize as do
    from services.invoice_lifecycle import resolve_invoice_id

    _done(do(resolve_invoice_id(invoice_id)).to_json(), as_json)


@app.command("mark-paid")
def mark_paid(
    invoice_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Record that a finalized invoice has been paid."""
    from services.invoice_lifecycle import mark_paid as do
    from services.invoice_lifecycle import resolve_invoice_id

    _done(do(resolve_invoice_id(invoice_id)).to_json(), as_json)


@app.command("void")
def void(
    invoice_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cancel a draft or finalized invoice (it keeps its number); see `reissue`."""
    from services.invoice_lifecycle import resolve_invoice_id
    from services.invoice_lifecycle import void as do

    _done(do(resolve_invoice_id(invoice_id)).to_json(), as_json)


@app.command("reissue")
def reissue(
    invoice_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Issue a new invoice for the period of a void one, from the current rollups."""
    from services.invoice_lifecycle import reissue as do
    from services.invoice_lifecycle import resolve_invoice_id

    _done(do(resolve_invoice_id(invoice_id)).to_json(), as_json)


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    keys = (
        *("id", "number", "customer_id", "period", "period_start", "period_end", "status"),
        *("issue_date", "due_date"),
    )
    summary = {key: document[key] for key in keys}
    summary.update({key: document[key] for key in ("plan", "plan_version", "currency", "total")})
    return summary


def _done(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(document)
    else:
        number = f" number {document['number']}" if document["number"] is not None else ""
        console.print(f"invoice [bold]{document['id']}[/bold]{number}: {document['status']}")


def _print_invoice(document: dict[str, Any]) -> None:
    rows = []
    for line in document["lines"]:
        label = _label(line)
        rows.append((label, line.get("quantity", ""), line["amount"]))
        for tier in line.get("tiers", []):
            rows.append(
                (f"  tier {tier['tier']} @ {tier['unit_amount']}", tier["quantity"], tier["amount"])
            )
    number = document["number"] if document["number"] is not None else "-"
    title = (
        f"Invoice {document['id']} (no. {number}, {document['status']}) — "
        f"{document['customer_id']} — {_period_text(document)} ({document['currency']})"
    )
    print_table(title, ["line", "quantity", "amount"], rows)
    console.print(
        f"subtotal {document['subtotal']}   tax {document['tax']}   "
        f"[bold]total {document['total']} {document['currency']}[/bold]"
    )
    if document.get("due_date"):
        console.print(
            f"issued {document['issue_date']}, due {document['due_date']}"
            f" (net {document['payment_terms_days']} days)"
        )
    note = document.get("credit_note")
    if note:
        console.print(f"cancelled by credit note CN-{note['number']} ({note['id']})")


def _label(line: dict[str, Any]) -> str:
    plan = f" [{line['plan']}]" if "plan" in line else ""
    if line["kind"] == "adjustment":
        return f"{line['description']}{plan}"
    if line["kind"] == "usage":
        return f"{line.get('name') or line['metric']} ({line['model']}){plan}"
    text = {"base_fee": "base fee", "minimum_true_up": "minimum spend true-up"}[line["kind"]]
    proration = line.get("proration")
    if proration:
        text += f" ({proration['days']}/{proration['period_days']} days)"
    return text + plan


def _period_text(document: dict[str, Any]) -> str:
    """'1 Jan 2026 – 31 Jan 2026': the period's local first and last days."""
    from pricing.periods import local_date

    timezone = document.get("timezone") or "UTC"
    first = local_date(datetime.fromisoformat(document["period_start"]), timezone)
    after = local_date(datetime.fromisoformat(document["period_end"]), timezone)
    last = date.fromordinal(after.toordinal() - 1)
    return f"{first:%-d %b %Y} – {last:%-d %b %Y} ({timezone})"
