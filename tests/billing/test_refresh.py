"""Late usage refreshes drafts through the ingest actor, coalesced: one refresh waits per
customer × segment, and none of the usage it was asked for is missed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dramatiq import Retry
from dramatiq.brokers.stub import StubBroker

from pricing.periods import Period, billing_period
from services import invoice_lifecycle as invoices
from services import invoicing
from tasks import billing
from tasks.broker import BILLING_QUEUE
from tasks.ingest import ingest_events
from tests.billing.helpers import customer, deliver, event

pytestmark = [pytest.mark.usefixtures("plans"), pytest.mark.date_sensitive]

_batches = itertools.count()


def last_period() -> Period:
    """The calendar month before the current one: ended, and its last hour is inside the
    accepted window on every day of the year (the ingest actor checks against the real now)."""
    return billing_period(billing_period(datetime.now(UTC)).start - timedelta(microseconds=1))


def late(customer_id: str, period: Period, quantity: int) -> dict[str, Any]:
    at = period.end - timedelta(hours=1)
    return {
        "batch_id": f"late-{next(_batches)}",
        "events": [event(customer_id, at, quantity=quantity)],
    }


def waiting(broker: StubBroker) -> int:
    return broker.queues[BILLING_QUEUE].qsize()


def billed_calls(invoice_id: str) -> str:
    return str(invoices.get_invoice(invoice_id).to_json()["usage"]["api_calls"])


@pytest.fixture
def draft() -> tuple[Period, str]:
    """A customer whose last period's draft exists, with no usage in it yet."""
    period = last_period()
    customer("late", "small", starts_at=period.start)
    return period, invoices.generate("late", period.start).id


def test_many_late_batches_queue_one_refresh_that_bills_all_of_them(
    stub_broker: StubBroker, draft: tuple[Period, str]
) -> None:
    period, invoice_id = draft
    for _ in range(25):
        ingest_events(late("late", period, 10))
    assert waiting(stub_broker) == 1
    deliver(stub_broker)
    assert billed_calls(invoice_id) == "250"

    ingest_events(late("late", period, 7))  # after the refresh ran: a refresh of its own
    assert waiting(stub_broker) == 1
    deliver(stub_broker)
    assert billed_calls(invoice_id) == "257"


def test_usage_committed_while_a_refresh_runs_gets_a_refresh_of_its_own(
    stub_broker: StubBroker, draft: tuple[Period, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    period, invoice_id = draft
    real_refresh = invoicing.refresh_after_late_usage
    runs: list[str] = []

    def refresh_then_a_batch_commits(customer_id: str, start: datetime) -> Any:
        refreshed = real_refresh(customer_id, start)  # has read the rollups already
        if not runs:
            ingest_events(late("late", period, 5))
        runs.append(customer_id)
        return refreshed

    monkeypatch.setattr(invoicing, "refresh_after_late_usage", refresh_then_a_batch_commits)
    ingest_events(late("late", period, 10))
    deliver(stub_broker)
    assert len(runs) == 2
    assert billed_calls(invoice_id) == "15"


def test_a_refresh_that_could_not_be_sent_is_asked_for_again_by_the_redelivery(
    stub_broker: StubBroker, draft: tuple[Period, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    period, invoice_id = draft
    message = late("late", period, 10)
    real_send = billing.refresh_invoices.send

    def broker_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(billing.refresh_invoices, "send", broker_down)
    with pytest.raises(Retry, match="broker unreachable"):
        ingest_events(message)  # committed; Dramatiq will redeliver the batch
    monkeypatch.setattr(billing.refresh_invoices, "send", real_send)
    ingest_events(message)
    assert waiting(stub_broker) == 1
    deliver(stub_broker)
    assert billed_calls(invoice_id) == "10"


def test_refreshes_are_coalesced_per_customer_and_segment(
    stub_broker: StubBroker, draft: tuple[Period, str]
) -> None:
    period, _ = draft
    customer("other", "small", starts_at=period.start)
    assert billing.request_invoice_refresh("late", period.start)
    assert not billing.request_invoice_refresh("late", period.start)
    assert billing.request_invoice_refresh("other", period.start)
    assert billing.request_invoice_refresh("late", period.start - timedelta(days=31))
    assert waiting(stub_broker) == 3
