"""`meter periods close`, `meter invoices ...` and `meter ops ...` through Typer's runner."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import typer
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from typer.testing import CliRunner

from cli import invoices as invoices_cli
from cli import ops as ops_cli
from cli import periods as periods_cli
from cli.output import CliError
from services import invoice_lifecycle as invoices
from services import invoicing
from services.customers import create_customer
from storage.invoices import jobs as invoice_jobs
from tests.billing.helpers import customer, event, ingest, utc

pytestmark = pytest.mark.usefixtures("plans")

runner = CliRunner()
JANUARY = utc(2026, 1, 1)


def run(app: typer.Typer, *args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture
def two_customers(plans: None) -> None:
    create_customer("acme", "small", name="Acme <Rockets> & Co", starts_at=utc(2025, 12, 1))
    customer("globex", "big", starts_at=utc(2025, 12, 1), timezone="America/New_York")
    ingest([event("acme", utc(2026, 1, 9), quantity=1234)])
    ingest([event("acme", utc(2026, 1, 9), "seats", properties={"user_id": "u1"})])
    ingest([event("globex", utc(2026, 1, 20), quantity=5)])


@pytest.mark.usefixtures("two_customers")
def test_periods_close_inline_creates_every_invoice_and_is_idempotent() -> None:
    summary = run(periods_cli.app, "close", "--period", "2026-01", "--inline", "--json")
    assert summary["jobs"] == 2
    assert summary["status"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}
    again = run(periods_cli.app, "close", "--period", "2026-01", "--inline", "--json")
    assert again["status"]["succeeded"] == 2
    assert len(invoices.list_invoices()) == 2
    listed = run(invoices_cli.app, "list", "--period", "2026-01", "--json")
    assert {i["customer_id"] for i in listed} == {"acme", "globex"}
    assert run(invoices_cli.app, "list", "--customer", "globex", "--json")[0]["plan"] == "big"
    assert run(invoices_cli.app, "list", "--period", "2025-12", "--json") == []


@pytest.mark.usefixtures("two_customers")
def test_periods_close_wait_follows_the_workers(stub_broker: StubBroker) -> None:
    worker = Worker(stub_broker, worker_timeout=20, worker_threads=2)
    worker.start()
    try:
        result = runner.invoke(periods_cli.app, ["close", "--period", "2026-01", "--wait"])
    finally:
        worker.stop()
    assert result.exit_code == 0, result.output
    assert "2 succeeded" in result.stdout
    assert "invoices" in result.stderr  # the progress bar, on stderr


@pytest.mark.usefixtures("two_customers")
def test_periods_close_wait_without_workers_times_out_with_a_hint() -> None:
    result = runner.invoke(
        periods_cli.app, ["close", "--period", "2026-01", "--wait", "--timeout", "0.2"]
    )
    assert isinstance(result.exception, CliError)
    assert "--inline" in str(result.exception)
    bad = runner.invoke(periods_cli.app, ["close", "--period", "2026-13", "--inline"])
    assert isinstance(bad.exception, CliError)


@pytest.mark.usefixtures("two_customers")
def test_invoices_show_json_is_the_quote_shape_plus_the_invoice_fields(tmp_path: Path) -> None:
    run(periods_cli.app, "close", "--period", "2026-01", "--inline")
    acme = invoices.find_invoice("acme", JANUARY)
    assert acme is not None
    shown = run(invoices_cli.app, "show", acme.id, "--json")
    for key in ("plan", "currency", "usage", "lines", "subtotal", "tax", "total"):
        assert key in shown  # the `meter quote --json` shape
    assert shown["id"] == acme.id and shown["number"] is None and shown["status"] == "draft"
    assert shown["customer_id"] == "acme" and shown["plan_version"] == 1
    assert shown["period_start"] == "2026-01-01T00:00:00+00:00"
    assert shown["period_end"] == "2026-02-01T00:00:00+00:00"
    api = shown["lines"][1]
    assert list(api)[:3] == ["kind", "metric", "model"] and list(api)[-1] == "amount"
    assert [t["quantity"] for t in api["tiers"]] == ["100", "1134"]
    assert api["amount"] == "113.40"
    assert (shown["subtotal"], shown["tax"], shown["total"]) == ("218.40", "21.84", "240.24")

    final = run(invoices_cli.app, "finalize", acme.id, "--json")
    assert (final["status"], final["number"]) == ("finalized", 1)
    html = tmp_path / "invoice.html"
    text = run(invoices_cli.app, "show", acme.id, "--html", str(html))
    assert "written to" in text and "113.40" in text
    page = html.read_text()
    assert "<h1>Invoice 1</h1>" in page
    assert "Acme &lt;Rockets&gt; &amp; Co" in page  # escaped
    assert "1 Jan 2026 – 31 Jan 2026" in page
    assert "Above 100: 1,134 at 0.10" in page
    assert "USD 240.24" in page and "Tax (10%)" in page and "21.84" in page


@pytest.mark.usefixtures("two_customers")
def test_invoice_lifecycle_commands() -> None:
    run(periods_cli.app, "close", "--period", "2026-01", "--inline")
    globex = invoices.find_invoice("globex", JANUARY.replace(hour=5))
    assert globex is not None
    assert run(invoices_cli.app, "void", globex.id, "--json")["status"] == "void"
    reissued = run(invoices_cli.app, "reissue", globex.id, "--json")
    assert reissued["replaces"] == globex.id and reissued["status"] == "draft"
    run(invoices_cli.app, "finalize", reissued["id"])
    paid = run(invoices_cli.app, "mark-paid", reissued["id"], "--json")
    assert paid["status"] == "paid" and paid["paid_at"]
    refused = runner.invoke(invoices_cli.app, ["void", reissued["id"]])
    assert refused.exit_code != 0 and "cannot become void" in str(refused.exception)
    table = run(invoices_cli.app, "list", "--customer", "globex")
    assert "void" in table and "paid" in table


def test_ops_failed_and_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    customer("ops", "small", starts_at=utc(2025, 12, 1))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(invoicing, "generate", broken)
        result = runner.invoke(periods_cli.app, ["close", "--period", "2026-01", "--inline"])
    assert result.exit_code == 1
    assert "RuntimeError: disk full" in result.stderr
    (failed,) = run(ops_cli.app, "failed", "--json")
    assert (failed["customer_id"], failed["status"]) == ("ops", "failed")
    assert failed["last_error"] == "RuntimeError: disk full"
    assert "disk full" in run(ops_cli.app, "failed")

    (retried,) = run(ops_cli.app, "retry", str(failed["id"]), "--inline", "--json")
    assert (retried["status"], retried["attempts"]) == ("succeeded", 2)
    assert run(ops_cli.app, "failed", "--json") == []
    invoice = invoices.find_invoice("ops", JANUARY)
    assert invoice is not None and retried["invoice_id"] == invoice.id

    # --all with nothing failed does nothing; a retry of what succeeded changes nothing.
    assert run(ops_cli.app, "retry", "--all", "--json") == []
    run(ops_cli.app, "retry", str(failed["id"]), "--inline")
    assert invoices.find_invoice("ops", JANUARY) == invoice
    assert isinstance(runner.invoke(ops_cli.app, ["retry"]).exception, CliError)
    missing = runner.invoke(ops_cli.app, ["retry", "999"])
    assert "no invoice job 999" in str(missing.exception)


def test_closing_with_workers_running_elsewhere_never_duplicates(
    stub_broker: StubBroker,
) -> None:
    """A close racing an inline close: each customer still has one job and one invoice."""
    customers = {f"r{n}" for n in range(6)}
    for customer_id in customers:
        customer(customer_id, "small", starts_at=utc(2025, 12, 1))
    worker = Worker(stub_broker, worker_timeout=20, worker_threads=2)
    worker.start()
    inline_summary: list[periods_cli.CloseSummary] = []
    try:
        inline = threading.Thread(
            target=lambda: inline_summary.append(
                periods_cli.close_period("2026-01", inline=True, progress=False)
            )
        )
        inline.start()
        summary = periods_cli.close_period("2026-01", wait=True, progress=False, timeout=60)
        inline.join()
    finally:
        worker.stop()
    assert len(invoices.list_invoices()) == 6
    # Both closes name the same jobs. Their ids are not 1..6: when the two inserts run at the
    # same moment, the one that meets a conflict still draws (and skips) sequence values.
    assert [s.job_ids for s in inline_summary] == [summary.job_ids]
    jobs = invoice_jobs.get_jobs(summary.job_ids)
    assert sorted(job.customer_id for job in jobs) == sorted(customers)
    assert {job.status for job in jobs} == {"succeeded"}
    assert {job.invoice_id for job in jobs} == {i.id for i in invoices.list_invoices()}
