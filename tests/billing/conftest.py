"""Billing fixtures: the billing actors on an in-memory broker, plans installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker

from tasks import billing
from tests.billing.helpers import install_plans

BILLING_ACTORS = (
    billing.generate_invoice,
    billing.invoice_job_failed,
    billing.close_period,
    billing.close_due_periods,
    billing.finalize_due_invoices,
    billing.refresh_invoices,
)


@pytest.fixture(autouse=True)
def stub_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubBroker]:
    """Nothing a billing test sends reaches a real Redis (the process's broker may point at a
    shared server): the actors are moved to a StubBroker, which a `Worker` can deliver from."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    for actor in BILLING_ACTORS:
        monkeypatch.setattr(actor, "broker", broker)
        broker.declare_actor(actor)
    yield broker
    broker.close()


@pytest.fixture
def plans(clean_state: None) -> None:
    install_plans()
