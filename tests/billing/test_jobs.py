"""Period close and invoice jobs: fan-out, catch-up, retries, exhausted retries, ops retry,
errors reported to Sentry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sentry_sdk
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.transport import Transport

from pricing.periods import billing_period, next_period
from services import invoice_jobs as invoice_jobs_service
from services import invoice_lifecycle as invoices
from services import invoicing
from storage.errors import InvalidInput
from storage.invoices import jobs as invoice_jobs
from tasks import billing
from tests.billing.helpers import customer, deliver, event, ingest, utc

pytestmark = pytest.mark.usefixtures("plans")

JANUARY = utc(2026, 1, 1)


def failing_generate(monkeypatch: pytest.MonkeyPatch, failures: int | None) -> list[int]:
    """Make `services.invoicing.generate` raise `failures` times (None: always); returns the
    call counter."""
    real = invoicing.generate
    calls = [0]

    def generate(*args: Any, **kwargs: Any) -> invoices.Invoice:
        calls[0] += 1
        if failures is None or calls[0] <= failures:
            raise RuntimeError(f"ledger offline (call {calls[0]})")
        return real(*args, **kwargs)

    monkeypatch.setattr(invoicing, "generate", generate)
    return calls


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(billing.generate_invoice.options, "min_backoff", 10)
    monkeypatch.setitem(billing.generate_invoice.options, "max_backoff", 40)


def test_close_period_fans_out_one_job_per_customer_whose_period_ended(
    stub_broker: StubBroker, db: psycopg.Connection
) -> None:
    for customer_id in ("c1", "c2", "c3"):
        customer(customer_id, "small", starts_at=utc(2025, 12, 1))
        ingest([event(customer_id, utc(2026, 1, 10), quantity=500)])
    customer("later", "small", starts_at=utc(2026, 2, 10))  # no plan in January
    customer("anniv", "small", starts_at=utc(2025, 12, 15), anchor_day=15)  # Jan 15 - Feb 15
    job_ids = billing.fan_out_period("2026-01")
    jobs = invoice_jobs.get_jobs(job_ids)
    assert sorted(job.customer_id for job in jobs) == ["anniv", "c1", "c2", "c3"]
    assert {job.status for job in jobs} == {"pending"}
    anniv = next(job for job in jobs if job.customer_id == "anniv")
    assert (anniv.period_start, anniv.period_end) == (utc(2026, 1, 15), utc(2026, 2, 15))
    queued = [Message.decode(data) for data in list(stub_broker.queues["billing"].queue)]
    assert len(queued) == 4
    assert sorted(m.message_id for m in queued) == sorted(job.message_id for job in jobs)
    assert {(m.actor_name, m.args) for m in queued} == {
        ("generate_invoice", (job.customer_id, job.period_start.isoformat())) for job in jobs
    }

    assert billing.fan_out_period("2026-01") == job_ids  # closing again sends nothing more
    assert stub_broker.queues["billing"].qsize() == 4
    deliver(stub_broker, threads=2)
    jobs = invoice_jobs.get_jobs(job_ids)
    assert {(job.status, job.attempts) for job in jobs} == {("succeeded", 1)}
    (count,) = db.execute("SELECT count(*) FROM invoices").fetchone()
    assert count == 4


@pytest.mark.date_sensitive
def test_close_due_periods_catches_up_and_twice_creates_no_duplicate_jobs(
    stub_broker: StubBroker, db: psycopg.Connection
) -> None:
    """A scheduler that was down for months: every ended period gets its job, once."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - 3  # three months before this one
    start = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    customer("old", "small", starts_at=start)
    customer("ny", "small", starts_at=start, timezone="America/New_York")
    expected = []
    period = billing_period(start)
    while period.end <= now:
        expected.append(period.start)
        period = next_period(period)
    assert len(expected) >= 2
    sent = billing.fan_out_due_periods()
    ny_ended = 0
    ny_period = billing_period(start, timezone="America/New_York")
    while ny_period.end <= now:
        ny_ended += 1
        ny_period = next_period(ny_period)
    assert sent == len(expected) + ny_ended
    assert billing.fan_out_due_periods() == 0
    rows = db.execute(
        "SELECT customer_id, period_start FROM invoice_jobs WHERE customer_id = 'old'"
        " ORDER BY period_start"
    ).fetchall()
    assert [row[1] for row in rows] == expected
    (total,) = db.execute("SELECT count(*) FROM invoice_jobs").fetchone()
    assert total == sent
    assert stub_broker.queues["billing"].qsize() == sent


def test_a_job_whose_message_was_lost_is_sent_again_after_an_hour(stub_broker: StubBroker) -> None:
    """Orphans are judged on the caller's clock: the stamps and `now` come from the same one."""
    customer("lost", "small", starts_at=utc(2026, 1, 1))
    sent_at = utc(2026, 2, 1, 9)  # January, its only ended period, is being closed
    (job_id,) = billing.fan_out_period("2026-01", now=sent_at)
    stub_broker.flush_all()  # the message is lost
    queue = stub_broker.queues["billing"]

    assert billing.fan_out_period("2026-01", now=sent_at + timedelta(minutes=59)) == [job_id]
    assert queue.qsize() == 0  # not an orphan yet
    assert billing.fan_out_period("2026-01", now=sent_at + timedelta(minutes=61)) == [job_id]
    assert queue.qsize() == 1  # sent again, and stamped: the next hour starts now
    assert billing.fan_out_due_periods(now=sent_at + timedelta(minutes=119)) == 0
    assert billing.fan_out_due_periods(now=sent_at + timedelta(minutes=122)) == 1
    deliver(stub_broker)
    (job,) = invoice_jobs.get_jobs([job_id])
    assert (job.status, job.attempts) == ("succeeded", 2)  # both messages sent ran
    assert len(invoices.list_invoices(customer_id="lost")) == 1


@pytest.mark.date_sensitive
def test_close_period_without_a_label_closes_each_customers_last_ended_period() -> None:
    now = datetime.now(UTC)
    customer("utc", "small", starts_at=now - timedelta(days=100))
    customer("tokyo", "small", starts_at=now - timedelta(days=100), timezone="Asia/Tokyo")
    jobs = invoice_jobs.get_jobs(billing.fan_out_period(None))
    for job in jobs:
        current = billing_period(
            now, timezone="Asia/Tokyo" if job.customer_id == "tokyo" else "UTC"
        )
        assert job.period_end == current.start  # the period right before the current one
    assert len(jobs) == 2
    with pytest.raises(InvalidInput, match="period"):
        billing.fan_out_period("2026-13")


@pytest.mark.date_sensitive
def test_the_actors_the_scheduler_enqueues_by_name(stub_broker: StubBroker) -> None:
    """`close_due_periods` then `finalize_due_invoices`, sent by name as the scheduler does:
    every ended period gets its invoice, and every draft past its grace period a number."""
    now = datetime.now(UTC)
    customer("sched", "small", starts_at=now - timedelta(days=75))
    for name in ("close_due_periods", "finalize_due_invoices"):
        stub_broker.enqueue(
            Message(queue_name="billing", actor_name=name, args=(), kwargs={}, options={})
        )
        deliver(stub_broker, threads=2)
    found = invoices.list_invoices(customer_id="sched")
    assert len(found) >= 2
    # (within an hour of a month end the newest invoice is still in its grace period)
    final = [i for i in found if i.grace_until is not None and i.grace_until <= now]
    assert len(final) >= len(found) - 1
    assert [(i.status, i.number) for i in final] == [
        ("finalized", n + 1) for n in range(len(final))
    ]


def test_an_invoice_job_that_fails_twice_then_succeeds(
    stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch, quick_retries: None
) -> None:
    customer("flaky", "small", starts_at=utc(2025, 12, 1))
    calls = failing_generate(monkeypatch, failures=2)
    billing.generate_invoice.send("flaky", JANUARY.isoformat())
    deliver(stub_broker)
    assert calls[0] == 3
    (job,) = invoice_jobs.get_jobs([1])
    assert (job.status, job.attempts) == ("succeeded", 3)
    assert job.last_error == "RuntimeError: ledger offline (call 2)"
    assert job.invoice_id == invoices.find_invoice("flaky", JANUARY).id  # type: ignore[union-attr]


def test_exhausted_retries_leave_the_job_failed_and_ops_retry_runs_it_again(
    stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch, quick_retries: None
) -> None:
    customer("broken", "small", starts_at=utc(2025, 12, 1))
    monkeypatch.setattr(invoice_jobs_service, "GENERATE_MAX_RETRIES", 2)
    with monkeypatch.context() as patch:
        calls = failing_generate(patch, failures=None)
        billing.generate_invoice.send("broken", JANUARY.isoformat())
        deliver(stub_broker)
    assert calls[0] == 3  # the first attempt and two retries
    (job,) = invoice_jobs.failed_jobs()
    assert (job.customer_id, job.status, job.attempts) == ("broken", "failed", 3)
    assert job.last_error == "RuntimeError: ledger offline (call 3)"
    assert invoices.find_invoice("broken", JANUARY) is None

    billing.retry_jobs(None)  # --all: every failed job
    deliver(stub_broker)
    (job,) = invoice_jobs.get_jobs([job.id])
    assert (job.status, job.attempts) == ("succeeded", 4)
    assert invoice_jobs.failed_jobs() == []


@pytest.mark.date_sensitive
def test_a_permanent_error_is_not_retried(stub_broker: StubBroker) -> None:
    customer("early", "small", starts_at=utc(2025, 12, 1))
    current = billing_period(datetime.now(UTC))  # has not ended
    billing.generate_invoice.send("early", current.start.isoformat())
    deliver(stub_broker)
    (job,) = invoice_jobs.failed_jobs()
    assert job.attempts == 1
    assert job.last_error is not None and "has not ended" in job.last_error


def test_ops_retry_of_a_succeeded_invoice_changes_nothing(stub_broker: StubBroker) -> None:
    customer("done", "small", starts_at=utc(2025, 12, 1))
    ingest([event("done", utc(2026, 1, 3), quantity=700)])
    (job_id,) = billing.fan_out_period("2026-01")
    deliver(stub_broker)
    final = invoices.finalize(invoices.find_invoice("done", JANUARY).id)  # type: ignore[union-attr]
    draft_customer = "draft"
    customer(draft_customer, "small", starts_at=utc(2025, 12, 1))
    (draft_job,) = billing.fan_out_period("2026-01")[1:]
    deliver(stub_broker)
    draft = invoices.find_invoice(draft_customer, JANUARY)

    billing.retry_jobs([job_id, draft_job])
    deliver(stub_broker)
    billing.retry_jobs([job_id], inline=True)
    assert invoices.find_invoice("done", JANUARY) == final
    assert invoices.find_invoice(draft_customer, JANUARY) == draft
    assert len(invoices.list_invoices()) == 2
    jobs = invoice_jobs.get_jobs([job_id, draft_job])
    assert [(j.status, j.attempts) for j in jobs] == [("succeeded", 3), ("succeeded", 2)]


def test_request_invoice_refresh_queues_a_refresh_of_the_affected_draft(
    stub_broker: StubBroker,
) -> None:
    customer("fresh", "small", starts_at=utc(2025, 12, 1))
    draft = invoices.generate("fresh", JANUARY)
    late = ingest([event("fresh", utc(2026, 1, 31), quantity=900)], now=utc(2026, 2, 1, 0, 10))
    billing.request_invoice_refresh("fresh", late.deltas[0].start)
    deliver(stub_broker)
    assert invoices.get_invoice(draft.id).to_json()["usage"]["api_calls"] == "900"


class CapturingTransport(Transport):
    """A Sentry transport that keeps envelopes instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


def test_a_failing_invoice_job_is_reported_to_sentry(
    monkeypatch: pytest.MonkeyPatch, quick_retries: None
) -> None:
    customer("sentry", "small", starts_at=utc(2025, 12, 1))
    transport = CapturingTransport()
    sentry_sdk.init(
        dsn="http://k@localhost/1",
        transport=transport,
        integrations=[DramatiqIntegration()],
        default_integrations=False,
    )
    try:
        broker = StubBroker()  # created after init: the integration adds its middleware
        broker.emit_after("process_boot")
        for actor in (billing.generate_invoice, billing.invoice_job_failed):
            monkeypatch.setattr(actor, "broker", broker)
            broker.declare_actor(actor)
        monkeypatch.setattr(invoice_jobs_service, "GENERATE_MAX_RETRIES", 0)
        failing_generate(monkeypatch, failures=None)
        billing.generate_invoice.send("sentry", JANUARY.isoformat())
        deliver(broker)
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    exceptions = [
        value
        for envelope in transport.envelopes
        for item in envelope.items
        if item.type == "event" and item.payload.json
        for value in item.payload.json.get("exception", {}).get("values", [])
    ]
    assert {"type": "RuntimeError", "value": "ledger offline (call 1)"}.items() <= exceptions[
        0
    ].items()
    (job,) = invoice_jobs.failed_jobs()
    assert job.customer_id == "sentry"
