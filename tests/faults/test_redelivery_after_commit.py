"""Real Dramatiq workers against real Redis and PostgreSQL: a worker SIGKILLed between the
ledger commit and the Redis write loses nothing and counts nothing twice."""

from __future__ import annotations

import time

import pytest

from tasks import UsageRecorder
from tasks.broker import make_broker
from tests.faults.processes import scalar as _scalar
from tests.faults.processes import wait_for, worker
from tests.metering.helpers import assert_consistent, setup_customer


@pytest.mark.parametrize("events", [100, 250])
def test_worker_killed_between_commit_and_redis_write(clean_state: None, events: int) -> None:
    """With one batch, only its redelivery can fix the counters; with three, later batches
    find Redis without the first one and must not count it twice either."""
    setup_customer()
    recorder = UsageRecorder(make_broker(), batch_size=100)
    for i in range(events):
        recorder.record("cus_1", "api_calls", 2, event_id=f"k{i}")
    assert recorder.flush(timeout=10)
    recorder.close()

    with worker("tests.faults.fault_worker"):
        # The first batch commits, then its process dies before touching Redis.
        wait_for(lambda: _scalar("SELECT count(*) FROM usage_events") >= 100)
        wait_for(lambda: _scalar("SELECT count(*) FROM ingest_batches") >= 1)
        time.sleep(0.5)
    assert _scalar("SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NULL") >= 1

    with worker("workers.app"):
        # The dead worker's message is redelivered; the rest of the queue is processed.
        wait_for(lambda: _scalar("SELECT count(*) FROM usage_events") == events)
        batches = (events + 99) // 100
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
        wait_for(lambda: _scalar(applied) == batches)
    assert _scalar("SELECT sum(accepted) FROM ingest_batches") == events
    quantities = assert_consistent(require_live=True)
    assert quantities["api_calls"] == 2 * events
