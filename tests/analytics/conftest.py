"""Analytics fixtures: the billing actors on an in-memory broker (as in tests/billing), and a
known set of invoices (`scenario`) whose revenue, MRR and overage are computed by hand in
tests/analytics/test_reports.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker

from tests.analytics.scenario import build
from tests.billing.conftest import BILLING_ACTORS


@pytest.fixture(autouse=True)
def stub_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    for actor in BILLING_ACTORS:
        monkeypatch.setattr(actor, "broker", broker)
        broker.declare_actor(actor)
    yield broker
    broker.close()


@pytest.fixture
def scenario(clean_state: None) -> None:
    build()
