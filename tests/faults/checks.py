"""The equality every fault test ends with: ledger = rollups = counters = invoiced quantities,
and nothing accepted lost or counted twice."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import dramatiq

from pricing.periods import billing_period
from storage.invoices.records import find_invoice
from tasks import UsageRecorder, names
from tests.faults.processes import scalar, wait_for
from tests.metering.helpers import assert_consistent


def record(
    broker: dramatiq.Broker, count: int, *, at: datetime, batch_size: int = 1000, prefix: str = "e"
) -> None:
    """`count` api_calls of quantity 1 for cus_1 at `at`, queued in batches of `batch_size`."""
    recorder = UsageRecorder(broker, batch_size=batch_size, flush_interval=0.05)
    for i in range(count):
        recorder.record("cus_1", "api_calls", 1, event_id=f"{prefix}{i}", timestamp=at)
    assert recorder.flush(timeout=60)
    recorder.close()


def all_ingested(events: int) -> bool:
    """Every event in the ledger and every batch's counters applied."""
    if scalar("SELECT count(*) FROM usage_events") != events:
        return False
    return scalar("SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NULL") == 0


def close_period(broker: dramatiq.Broker, at: datetime) -> None:
    """What the scheduler sends at period end: `close_period` for the period holding `at`."""
    message = dramatiq.Message(
        queue_name=names.BILLING_QUEUE,
        actor_name=names.CLOSE_PERIOD,
        args=(at.strftime("%Y-%m"),),  # the test plan's UTC calendar months
        kwargs={},
        options={},
    )
    broker.enqueue(message)


def invoiced(at: datetime, timeout: float = 60) -> dict[str, Decimal]:
    """The usage quantities on cus_1's invoice of the period holding `at`, once it exists."""
    start = billing_period(at).start
    wait_for(lambda: find_invoice("cus_1", start) is not None, timeout=timeout)
    invoice = find_invoice("cus_1", start)
    assert invoice is not None
    assert scalar("SELECT count(*) FROM invoices") == 1
    return {key: Decimal(value) for key, value in invoice.document["usage"].items()}


def assert_exactly_once(events: int, at: datetime, invoice: dict[str, Decimal] | None) -> None:
    """`events` accepted events of quantity 1, each counted once everywhere."""
    assert scalar("SELECT count(*) FROM usage_events") == events
    assert scalar("SELECT count(DISTINCT event_id) FROM usage_events") == events
    assert scalar("SELECT sum(accepted) FROM ingest_batches") == events
    assert scalar("SELECT count(*) FROM rejected_events") == 0
    quantities = assert_consistent(at=at, require_live=True)  # ledger = rollups = counters
    assert quantities["api_calls"] == events
    if invoice is not None:
        assert invoice["api_calls"] == quantities["api_calls"] == events
