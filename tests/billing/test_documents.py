"""Invoices a customer can be sent (HTML and PDF), payment terms and due dates, credit notes."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from cli import customers as customers_cli
from cli import invoices as invoices_cli
from pricing.plans import load_plan
from services import credit_notes
from services import invoice_lifecycle as invoices
from services.customers import change_plan, update_details
from services.documents.html import render_html
from services.documents.model import credit_note_document, invoice_document
from services.documents.pdf import render_pdf
from storage.catalog.plans import apply_plan
from storage.invoices import writes
from storage.invoices.records import Invoice
from storage.settings import reset_settings
from tests.billing.helpers import customer, event, ingest, utc
from tests.conftest import SessionServers

pytestmark = pytest.mark.usefixtures("plans")

runner = CliRunner()
JANUARY = utc(2026, 1, 1)
AFTER_JANUARY = utc(2026, 2, 1, 2)  # the period has ended, the draft's grace is over

TERMS = """
code: terms
name: Terms
currency: USD
base_fee: "10.00"
payment_terms_days: 45
metrics:
  api_calls: {aggregation: sum}
charges:
  - {metric: api_calls, model: standard, unit_amount: "0.01"}
"""

YEN = """
code: yen
name: Yen
currency: JPY
base_fee: "1000"
tax_rate: "0.10"
metrics:
  api_calls: {aggregation: sum}
charges:
  - {metric: api_calls, model: standard, unit_amount: "3"}
"""

SELLER = {
    "METER_SELLER_NAME": "Meterline Demo Ltd",
    "METER_SELLER_ADDRESS": "12 Harbour Street\\nLondon EC1A 1AA",
    "METER_SELLER_TAX_ID": "GB123456789",
    "METER_SELLER_EMAIL": "billing@meterline.example",
    "METER_PAYMENT_INSTRUCTIONS": "IBAN GB33 BUKB 2020 1555 5555 55",
}


@pytest.fixture(autouse=True)
def seller(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in SELLER.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def _text(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def _january(customer_id: str, plan: str = "small", calls: int = 1234) -> Invoice:
    customer(customer_id, plan, starts_at=utc(2025, 12, 1))
    ingest([event(customer_id, utc(2026, 1, 9), quantity=calls)])
    return invoices.generate(customer_id, JANUARY, now=AFTER_JANUARY)


def _final(customer_id: str, plan: str = "small", calls: int = 1234) -> Invoice:
    return invoices.finalize(_january(customer_id, plan, calls).id, now=AFTER_JANUARY)


def test_pdf_opens_and_carries_the_number_and_the_total(tmp_path: Path) -> None:
    final = _final("pdf")
    assert (final.number, str(final.total)) == (1, "234.74")  # 100 + 113.40, tax 21.34
    text = _text(render_pdf(invoice_document(final)))
    assert "Invoice 1" in text
    assert "USD 234.74" in text
    assert "Tax (10%)" in text and "21.34" in text
    assert "Meterline Demo Ltd" in text and "GB123456789" in text
    assert "Above 100: 1,134 at 0.10" in text  # the tier in plain words

    path = tmp_path / "invoice.pdf"
    result = runner.invoke(invoices_cli.app, ["show", final.id, "--pdf", str(path)])
    assert result.exit_code == 0, result.output
    assert "written to" in result.stdout
    assert "USD 234.74" in _text(path.read_bytes())


def test_bill_to_and_seller_are_fixed_when_the_invoice_is_issued() -> None:
    customer("fixed", "small", starts_at=utc(2025, 12, 1))
    update_details("fixed", name="Acme <Rockets>", billing_address="1 Road\nSpringfield")
    draft = invoices.generate("fixed", JANUARY, now=AFTER_JANUARY)
    page = render_html(invoice_document(draft))
    assert "Acme &lt;Rockets&gt;" in page and "1 Road<br>" in page and "Springfield" in page
    assert "12 Harbour Street<br>" in page and "London EC1A 1AA" in page

    final = invoices.finalize(draft.id, now=AFTER_JANUARY)
    update_details("fixed", name="Someone Else", billing_address="Elsewhere")
    page = render_html(invoice_document(invoices.get_invoice(final.id)))
    assert "Acme &lt;Rockets&gt;" in page and "Someone Else" not in page
    shown = invoices.get_invoice(final.id).to_json()
    assert shown["bill_to"]["address"] == ["1 Road", "Springfield"]
    assert shown["seller"]["name"] == "Meterline Demo Ltd"


def test_due_date_is_the_local_issue_date_plus_the_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_PAYMENT_TERMS_DAYS", "20")
    reset_settings()
    apply_plan(load_plan(TERMS))
    zone = ZoneInfo("Pacific/Auckland")
    start = datetime(2026, 1, 1, tzinfo=zone)
    issued_at = datetime(2026, 2, 1, tzinfo=zone) + timedelta(hours=2)  # still 31 Jan in UTC
    expected_issue = date(2026, 2, 1)
    cases = {"seller_default": ("small", None, 20), "plan": ("terms", None, 45)}
    cases["customer"] = ("terms", 7, 7)
    for customer_id, (plan, own_terms, days) in cases.items():
        customer(customer_id, plan, starts_at=utc(2025, 12, 1), timezone="Pacific/Auckland")
        if own_terms is not None:
            update_details(customer_id, payment_terms_days=own_terms)
        draft = invoices.generate(customer_id, start, now=issued_at)
        assert draft.to_json()["due_date"] is None  # a draft is not due
        final = invoices.finalize(draft.id, now=issued_at).to_json()
        assert final["issue_date"] == expected_issue.isoformat()
        assert final["payment_terms_days"] == days
        assert final["due_date"] == (expected_issue + timedelta(days=days)).isoformat()
    update_details("customer", payment_terms_days=60)  # later terms leave an issued invoice be
    kept = invoices.list_invoices(customer_id="customer")[0].to_json()
    assert kept["due_date"] == (expected_issue + timedelta(days=7)).isoformat()
    page = render_html(invoice_document(invoices.list_invoices(customer_id="customer")[0]))
    assert "8 Feb 2026" in page and "net 7 days" in page


def test_a_draft_is_marked_and_promises_no_time_already_past() -> None:
    draft = _january("draft")
    document = invoice_document(draft, now=AFTER_JANUARY + timedelta(days=3))
    page = render_html(document)
    assert 'class="banner draft">DRAFT<' in page and 'class="watermark draft"' in page
    assert "Draft invoice" in page and "not a request for payment" in page
    assert "not before" not in page  # its grace period is over: no date in the past
    text = _text(render_pdf(document))
    assert "DRAFT" in text and "not a request for payment" in text
    assert "IBAN" not in text  # no payment instructions on what is not to be paid
    assert draft.grace_until is not None
    early = render_html(invoice_document(draft, now=draft.grace_until - timedelta(minutes=30)))
    assert "not before 1 Feb 2026 01:00 UTC" in early


def test_no_base_fee_line_and_no_tax_line_when_the_plan_has_neither() -> None:
    final = _final("floor", "floor", calls=100)  # minimum 50.00, 0.10 per call, no fee, no tax
    document = invoice_document(final)
    assert [row.kind for row in document.rows] == ["usage", "minimum_true_up"]
    assert [line["kind"] for line in final.to_json()["lines"]] == [
        "base_fee",
        "usage",
        "minimum_true_up",
    ]  # the JSON keeps every line (the contract); the document leaves out what bills nothing
    page = render_html(document)
    assert "base fee" not in page.lower() and "Tax (" not in page
    assert "API calls — 100 at 0.10" in page
    assert "Minimum spend true-up (minimum 50.00 per month)" in page and "40.00" in page


def test_tax_line_shows_its_rate_and_amounts_fit_the_currency() -> None:
    apply_plan(load_plan(YEN))
    final = _final("yen", "yen", calls=123457)
    document = invoice_document(final)
    assert document.totals == [
        ("Subtotal", "371,371"),  # 1,000 + 123,457 × 3
        ("Tax (10%)", "37,137"),
        ("Total due", "JPY 408,508"),
    ]
    page = render_html(document)
    assert "API calls — 123,457 at 3" in page and "370,371" in page
    usd = invoice_document(_final("usd"))
    assert usd.totals[-1] == ("Total due", "USD 234.74") and usd.totals[1][0] == "Tax (10%)"


def test_voiding_a_finalized_invoice_issues_a_credit_note_that_negates_it(tmp_path: Path) -> None:
    final = _final("void")
    voided = invoices.void(final.id, now=AFTER_JANUARY + timedelta(days=1))
    assert invoices.void(final.id).status == "void"  # voiding again: no second credit note
    notes = credit_notes.list_credit_notes()
    assert len(notes) == 1
    note = notes[0]
    assert (note.number, note.invoice_id, note.customer_id) == (1, final.id, "void")
    assert (note.subtotal, note.tax, note.total) == (-final.subtotal, -final.tax, -final.total)
    shown = note.to_json()
    billed = final.to_json()
    assert [line["amount"] for line in shown["lines"]] == [
        line["amount"] if line["amount"] in ("0", "0.00") else f"-{line['amount']}"
        for line in billed["lines"]
    ]
    assert shown["invoice_number"] == final.number and shown["total"] == "-234.74"
    assert shown["bill_to"] == billed["bill_to"]
    text = _text(render_pdf(credit_note_document(note)))
    assert "Credit note CN-1" in text and "USD -234.74" in text
    assert f"{final.number} (issued 1 Feb 2026)" in text
    page = render_html(invoice_document(voided, credit_note=note))
    assert "cancelled by credit note CN-1" in page and 'class="watermark void"' in page

    draft = _january("never-issued")
    invoices.void(draft.id)
    assert len(credit_notes.list_credit_notes()) == 1  # a draft was never issued: no note


def test_credit_note_numbers_are_gapless_when_voids_run_at_once(
    db: psycopg.Connection, test_servers: SessionServers
) -> None:
    first, second = _final("cn-a"), _final("cn-b")
    errors: list[BaseException] = []

    def void(invoice_id: str) -> None:
        try:
            invoices.void(invoice_id)
        except BaseException as error:
            errors.append(error)

    with psycopg.connect(test_servers.database_url) as holder:
        assert writes.next_number(holder, credit_notes.SEQUENCE) == 1  # held, then given back
        threads = [threading.Thread(target=void, args=(i,)) for i in (first.id, second.id)]
        threads.append(threading.Thread(target=void, args=(first.id,)))  # the same one twice
        for thread in threads:
            thread.start()
        _wait_for_blocked(db, 3)  # all three voids are in flight together
        holder.rollback()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    notes = credit_notes.list_credit_notes()
    assert sorted(note.number for note in notes) == [1, 2]
    assert sorted(note.invoice_id for note in notes) == sorted([first.id, second.id])


def _wait_for_blocked(db: psycopg.Connection, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (waiting,) = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        if waiting >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} voids waited on a lock")


def _run(app: Any, *args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result.stdout


def test_credit_note_commands_and_invoice_json(tmp_path: Path) -> None:
    final = _final("cli")
    shown = _run(invoices_cli.app, "show", final.id, "--json")
    contract = {"id", "number", "customer_id", "period_start", "period_end", "status"}
    contract |= {"plan", "plan_version", "currency", "usage", "lines", "subtotal", "tax"}
    assert contract | {"total", "segments", "grace_until", "replaces"} <= set(shown)
    assert shown["credit_note"] is None and shown["due_date"] == "2026-03-03"
    _run(invoices_cli.app, "void", final.id)
    listed = _run(invoices_cli.app, "list", "--json")
    assert listed[0]["credit_note"]["number"] == 1
    assert "CN-1" in _run(invoices_cli.app, "list")
    by_number = _run(invoices_cli.app, "credit-note", "CN-1", "--json")
    assert by_number["invoice_id"] == final.id and by_number["total"] == "-234.74"
    assert _run(invoices_cli.app, "credit-note", "1", "--json") == by_number
    assert _run(invoices_cli.app, "credit-note", final.id, "--json") == by_number
    assert _run(invoices_cli.app, "credit-notes", "--json")[0]["number"] == 1
    html, pdf = tmp_path / "cn.html", tmp_path / "cn.pdf"
    _run(invoices_cli.app, "credit-note", "CN-1", "--html", str(html), "--pdf", str(pdf))
    assert "Credit note CN-1" in html.read_text() and "USD -234.74" in _text(pdf.read_bytes())
    missing = runner.invoke(invoices_cli.app, ["credit-note", "CN-9"])
    assert missing.exit_code != 0 and "no credit note" in str(missing.exception)


def test_customers_update_sets_and_checks_billing_details() -> None:
    customer("upd", "small", starts_at=utc(2025, 12, 1))
    shown = _run(
        customers_cli.app,
        "update",
        "upd",
        "--name",
        "Upd Ltd",
        "--address",
        "1 Road\\nTown",
        "--email",
        "ap@upd.example",
        "--payment-terms",
        "14",
        "--json",
    )
    assert (shown["name"], shown["billing_address"]) == ("Upd Ltd", "1 Road\nTown")
    assert (shown["email"], shown["payment_terms_days"]) == ("ap@upd.example", 14)
    cleared = _run(customers_cli.app, "update", "upd", "--clear", "payment-terms", "--json")
    assert cleared["payment_terms_days"] is None and cleared["email"] == "ap@upd.example"
    for args, message in (
        (["--email", "nope"], "email: not an email address"),
        (["--payment-terms", "-1"], "payment_terms_days: must be 0 to 3650 days"),
        (["--address", "  "], "billing_address: must not be empty"),
        (["--clear", "colour"], "--clear: unknown detail"),
    ):
        result = runner.invoke(customers_cli.app, ["update", "upd", *args])
        assert result.exit_code != 0 and message in str(result.exception), result.output


def test_a_period_under_two_plans_names_each_plan_and_each_tax_rate() -> None:
    apply_plan(load_plan(TAXED))
    customer("two", "small", starts_at=utc(2025, 12, 1))
    ingest([event("two", utc(2026, 1, 5), quantity=1000)])
    change_plan("two", "taxed", utc(2026, 1, 15), now=utc(2026, 1, 15, 1))
    ingest([event("two", utc(2026, 1, 20), quantity=400)])
    final = invoices.finalize(invoices.generate("two", JANUARY, now=AFTER_JANUARY).id)
    document = invoice_document(final)
    # small: 14/31 × 100 = 45.16 + 90.00 at 10%; taxed: 17/31 × 100 = 54.84 + 30.00 at 20%
    assert document.totals[1] == ("Tax (10% of 135.16; 20% of 84.84)", "30.49")
    assert ("Plan", "Small (14 of 31 days), then Taxed (17 of 31 days)") in document.facts
    usage = [row for row in document.rows if row.kind == "usage" and row.amount != "0.00"]
    assert [(row.description, row.detail) for row in usage] == [
        ("API calls — 1,000", "under Small"),
        ("API calls — 400", "under Taxed"),
    ]
    assert [row.detail for row in document.rows if row.kind == "base_fee"] == [
        "for 14 of 31 days",
        "for 17 of 31 days",
    ]


TAXED = """
code: taxed
name: Taxed
currency: USD
base_fee: "100.00"
tax_rate: "0.20"
metrics:
  api_calls:  {aggregation: sum}
  storage_gb: {aggregation: max}
  seats:      {aggregation: unique_count, field: user_id}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 100, unit_amount: "0"}
      - {up_to: null, unit_amount: "0.10"}
"""
