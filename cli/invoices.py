"""`meter invoices ...`: list and show invoices, render one as HTML, move it through its
lifecycle (finalize, mark-paid, void, reissue)."""

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
    from services.invoice_lifecycle import list_invoices as find

    found = find(customer_id=customer, period_label=period, status=status)
    if as_json:
        print_json([_summary(invoice.to_json()) for invoice in found])
        return
    print_table(
        f"Invoices ({len(found)})",
        ["id", "number", "customer", "period", "status", "plan", "total"],
        [
            (
                i.id,
                i.number,
                i.customer_id,
                i.period_label,
                i.status,
                i.plan_code,
                f"{i.total} {i.currency}",
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
) -> None:
    """One invoice: its lines with tiers, totals and status."""
    from services.invoice_lifecycle import get_invoice, resolve_invoice_id
    from storage.catalog.customers import get_customer
    from storage.errors import NotFound

    invoice = get_invoice(resolve_invoice_id(invoice_id))
    document = invoice.to_json()
    if html is not None:
        try:
            name = get_customer(invoice.customer_id).name or invoice.customer_id
        except NotFound:
            name = invoice.customer_id
        html.write_text(render_html(document, customer_name=name), encoding="utf-8")
    if as_json:
        print_json(document)
        return
    _print_invoice(document)
    if html is not None:
        console.print(f"written to {html}")


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


def render_html(document: dict[str, Any], *, customer_name: str | None = None) -> str:
    """The invoice as a standalone HTML page that can be sent to the customer."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cli", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    number = document.get("number")
    return environment.get_template("invoice.html").render(
        invoice=document,
        number_label=f"No. {number}" if number is not None else "(draft)",
        customer_name=customer_name or document["customer_id"],
        period_text=_period_text(document),
        segments=document.get("segments", []),
        lines=[_html_line(line) for line in document["lines"]],
    )


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "number", "customer_id", "period", "period_start", "period_end", "status")
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


def _html_line(line: dict[str, Any]) -> dict[str, Any]:
    notes = []
    if "included" in line:
        notes.append(f"{line['included']} included, {line['billable']} billed")
    notes += [f"{key.replace('_', ' ')}: {value}" for key, value in line.get("details", {}).items()]
    return {
        "kind": line["kind"],
        "label": _label(line),
        "note": "; ".join(notes) or None,
        "quantity": line.get("quantity"),
        "amount": line["amount"],
        "tiers": line.get("tiers", []),
    }


def _period_text(document: dict[str, Any]) -> str:
    """'1 Jan 2026 – 31 Jan 2026': the period's local first and last days."""
    from pricing.periods import local_date

    timezone = document.get("timezone") or "UTC"
    first = local_date(datetime.fromisoformat(document["period_start"]), timezone)
    after = local_date(datetime.fromisoformat(document["period_end"]), timezone)
    last = date.fromordinal(after.toordinal() - 1)
    return f"{first:%-d %b %Y} – {last:%-d %b %Y} ({timezone})"
