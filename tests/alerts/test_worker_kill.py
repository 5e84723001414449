"""Real Dramatiq workers: a worker SIGKILLed between the batch's commit and the alert, or
between the alert's commit and the delivery request, still gives exactly one alert and one
outbox row once the batch is redelivered."""

from __future__ import annotations

import pytest

from tasks import UsageRecorder
from tasks.broker import make_broker
from tasks.queues import queue_stats
from tests.alerts.helpers import D, alert_rows, fired, outbox_count, setup_customer
from tests.faults.processes import scalar as _scalar
from tests.faults.processes import wait_for, worker


@pytest.mark.parametrize("moment", ["before_alerts", "after_alerts"])
def test_worker_killed_around_the_alert(clean_state: None, moment: str) -> None:
    setup_customer()
    recorder = UsageRecorder(make_broker(), batch_size=100)
    for i in range(100):
        recorder.record("cus_a", "api_calls", 96, event_id=f"k{i}")  # 9,600: 80 % and 95 %
    assert recorder.flush(timeout=10)
    recorder.close()

    with worker(f"tests.alerts.fault_worker:{moment}") as dying:
        wait_for(lambda: dying.poll() is not None)  # killed itself in the batch
    assert _scalar("SELECT count(*) FROM usage_events") == 100
    expected = [("usage", "api_calls", D("0.8")), ("usage", "api_calls", D("0.95"))]
    assert fired() == ([] if moment == "before_alerts" else expected)

    with worker("workers.app"):
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
        wait_for(lambda: _scalar(applied) == 1)
        # Acknowledged: the redelivered message has left the queue (its hash of messages
        # holds it while it is processed).
        wait_for(lambda: queue_stats(make_broker())["queues"]["ingest"] == 0)
    assert fired() == expected
    assert outbox_count() == 2
    assert [r["payload"]["used"] for r in alert_rows()] == ["9600", "9600"]
