"""`meter demo`: the system end to end on the embedded servers (or the configured ones).

Everything goes through the production paths: plans from files, `record_usage` into Dramatiq
messages, the ingest actor run by a Dramatiq worker (in this process, so one command is enough),
live usage read from the Redis counters.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import console
from cli.usage import print_usage

EXAMPLE_PLANS = Path(__file__).resolve().parent.parent / "examples" / "plans"

# id, plan, timezone, anniversary day
DEMO_CUSTOMERS = [
    ("acme", "api", "UTC", None),
    ("globex", "growth", "America/New_York", None),
    ("initech", "team", "Europe/Berlin", 15),
    ("hooli", "payments", "Asia/Tokyo", None),
]


def demo(
    events: int = typer.Option(50_000, "--events", help="Size of the usage burst."),
) -> None:
    """Plans, customers, a burst of usage, live usage and estimated bills."""
    from storage.migrate import migrate

    migrate()  # the demo always brings the schema up to date, whatever METER_AUTO_MIGRATE says
    console.rule("[bold]Meterline demo")
    console.print("[bold]1. Plans are files[/bold]: validating and storing examples/plans/*.yaml")
    _apply_plans()
    console.print("[bold]2. Customers[/bold], each billed in its own time zone")
    _create_customers()
    console.print(f"[bold]3. A burst of {events:,} usage events[/bold] through record_usage()")
    _ingest_burst(events)
    console.print("[bold]4. Live usage and estimated bills[/bold] (Redis counters, no SQL)")
    _show_usage()
    label = _previous_label()
    console.print(f"[bold]5. Closing period {label}[/bold]: one invoice job per customer")
    _close_and_show(label)
    console.print("[bold]6. Revenue[/bold]: finalized invoices by month, the current period apart")
    _revenue_chart(label)
    console.rule("done")


def _apply_plans() -> None:
    from pricing.plans import load_plan
    from storage.catalog.plans import apply_plan

    for path in sorted(EXAMPLE_PLANS.glob("*.yaml")):
        version, created = apply_plan(load_plan(path.read_text()))
        state = "new version" if created else "unchanged"
        console.print(f"   {path.name:<14} -> plan version {version} ({state})")


def _create_customers() -> None:
    from services.customers import create_customer, get_customer
    from storage.errors import NotFound

    started = datetime.now(UTC) - timedelta(days=40)
    for customer_id, plan_code, timezone, anchor in DEMO_CUSTOMERS:
        try:
            get_customer(customer_id)
            console.print(f"   {customer_id:<8} exists")
        except NotFound:
            create_customer(
                customer_id, plan_code, timezone=timezone, anchor_day=anchor, starts_at=started
            )
            console.print(f"   {customer_id:<8} created on {plan_code} ({timezone})")


def _ingest_burst(events: int) -> None:
    """Record `events` events and ingest them with an in-process worker until all are in."""
    import dramatiq

    import tasks.ingest  # noqa: F401  (declares the ingest actor on the broker)
    from storage.ledger.batches import stats
    from tasks import configure_recorder
    from tasks.broker import get_broker
    from tasks.names import INGEST_QUEUE

    worker = dramatiq.Worker(get_broker(), queues={INGEST_QUEUE}, worker_threads=2)
    worker.start()
    recorder = configure_recorder()
    try:
        before = stats()["accepted"]
        _burst(events)
        _wait_for_ingest(before, events)
    finally:
        recorder.flush()
        worker.stop()


def _show_usage() -> None:
    from services.usage import current_usage

    for customer_id, *_ in DEMO_CUSTOMERS:
        started_at = time.perf_counter()
        document = current_usage(customer_id).to_json()
        elapsed_ms = (time.perf_counter() - started_at) * 1000
        print_usage(document)
        console.print(f"   [dim]read in {elapsed_ms:.2f} ms[/dim]")


def _previous_label() -> str:
    first = datetime.now(UTC).replace(day=1)
    return f"{first - timedelta(days=1):%Y-%m}"


def _close_and_show(label: str) -> None:
    from cli.invoices import _print_invoice
    from cli.output import print_table
    from cli.periods import close_period
    from services.documents.html import render_html
    from services.documents.model import invoice_document
    from services.documents.pdf import render_pdf
    from services.invoice_lifecycle import get_invoice, list_invoices
    from storage.settings import get_settings

    summary = close_period(label, inline=True)
    console.print(f"   jobs: {summary.counts}")
    invoices = [i.to_json() for i in list_invoices(period_label=label)]
    print_table(
        f"Invoices for {label} (drafts until the grace period for late usage ends)",
        ["invoice", "customer", "status", "total"],
        [
            (d["id"], d["customer_id"], d["status"], f"{d['total']} {d['currency']}")
            for d in invoices
        ],
    )
    if invoices:
        first = max(invoices, key=lambda d: float(d["total"]))
        _print_invoice(first)
        document = invoice_document(get_invoice(first["id"]))
        path = get_settings().data_dir / f"invoice-{first['id']}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(document), encoding="utf-8")
        path.with_suffix(".pdf").write_bytes(render_pdf(document))
        console.print(f"   the invoice as a document: {path} and {path.with_suffix('.pdf')}")


def _revenue_chart(label: str) -> None:
    """Finalize the period's drafts (what the scheduler does when their grace period ends),
    then the revenue report of the last three months and its chart."""
    from cli.analytics import print_revenue
    from cli.charts import revenue_chart
    from pricing.analytics import shift_month
    from services import analytics
    from services.invoice_lifecycle import finalize, list_invoices
    from storage.settings import get_settings

    drafts = list_invoices(period_label=label, status="draft")
    for invoice in drafts:
        finalize(invoice.id)
    console.print(
        f"   finalized {len(drafts)} draft(s) of {label} now (the scheduler does it when their"
        " grace period ends)"
    )
    now = datetime.now(UTC)
    last = analytics.current_month(now)
    document = analytics.revenue(shift_month(last, -2), last, by="plan", now=now)
    print_revenue(document)
    path = get_settings().data_dir / "revenue.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    revenue_chart(document, path)
    console.print(f"   the revenue chart: {path}", highlight=False)


def _bar(label: str) -> Progress:
    return Progress(
        TextColumn(f"   {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _burst(count: int) -> None:
    from pricing.periods import billing_period
    from tasks import record_usage

    rng = random.Random(42)  # noqa: S311 (demo data, not security)
    users = [f"user{i}" for i in range(40)]
    # customer, metric, quantity(), properties() or None
    shapes: list[tuple[str, str, Callable[[], float], Callable[[], dict[str, str]] | None]] = [
        ("acme", "api_calls", lambda: 1, None),
        ("acme", "bandwidth_gb", lambda: round(rng.uniform(0.01, 0.5), 3), None),
        ("acme", "storage_gb", lambda: rng.randint(1, 60), None),
        ("globex", "api_calls", lambda: 1, lambda: {"region": rng.choice(["eu", "us", "uk"])}),
        ("globex", "requests", lambda: 1, None),
        ("initech", "logins", lambda: 1, lambda: {"user_id": rng.choice(users)}),
        ("hooli", "payments", lambda: 1, lambda: {"amount": f"{rng.uniform(5, 400):.2f}"}),
    ]
    weights = [60, 3, 1, 25, 8, 2, 1]
    now = datetime.now(UTC)
    window_start = (now - timedelta(days=34)).timestamp()
    last_period: dict[str, tuple[float, float]] = {}
    for customer_id, _plan, timezone, anchor in DEMO_CUSTOMERS:
        current = billing_period(now, timezone=timezone, anchor_day=anchor)
        last_period[customer_id] = (window_start, current.start.timestamp() - 1)
    with _bar("recording") as progress:
        task = progress.add_task("record", total=count)
        for i in range(count):
            customer, metric, quantity, props = rng.choices(shapes, weights)[0]
            # One event in five belongs to last period (recorded late, inside the window).
            at = rng.uniform(*last_period[customer]) if i % 5 == 0 else None
            record_usage(
                customer,
                metric,
                quantity(),
                timestamp=None if at is None else datetime.fromtimestamp(at, UTC),
                properties=props() if props else None,
            )
            if i % 2000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=count)


def _wait_for_ingest(before: int, count: int) -> None:
    from storage.ledger.batches import stats as ingest_stats

    with _bar("ingesting") as progress:
        task = progress.add_task("ingest", total=count)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = ingest_stats()["accepted"] - before
            progress.update(task, completed=done)
            if done >= count:
                return
            time.sleep(0.2)
    console.print("[yellow]   ingest did not finish within 5 minutes[/yellow]")
