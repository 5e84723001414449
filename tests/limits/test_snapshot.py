"""check_limit answered from the per-process snapshot (services.limit_snapshot): the same answer
as the synchronous read once refreshed; this process's own events at once; a batch ingested
meanwhile neither lost nor counted twice; overrides changed elsewhere after a refresh; fork."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from services.limit_snapshot import LimitSnapshots
from services.limits import check_limit
from services.overrides import set_overrides
from storage.catalog import limits as override_store
from storage.catalog.limits import OverrideChange
from tasks.ingest import ingest_events
from tasks.names import INGEST_QUEUE
from tasks.recorder import UsageRecorder
from tests.limits.helpers import setup_capped
from tests.metering.helpers import batch, event


@pytest.fixture(autouse=True)
def customer(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.ingest.request_invoice_refresh", lambda *args: None)
    setup_capped()


@pytest.fixture
def snapshots() -> Iterator[LimitSnapshots]:
    """Snapshots refreshed only when the test says (the thread's interval is an hour)."""
    kept = LimitSnapshots(interval=3600, stale_after=3600)
    yield kept
    kept.stop()


@pytest.fixture
def recorder() -> Iterator[tuple[UsageRecorder, StubBroker]]:
    broker = StubBroker()
    kept = UsageRecorder(broker, flush_interval=3600, batch_size=100_000)
    yield kept, broker
    kept.close(timeout=5)


def use(quantity: int, metric: str = "api_calls") -> None:
    ingest_events(batch([event(metric, quantity=quantity)]))


def deliver(broker: StubBroker) -> None:
    queue = broker.queues[INGEST_QUEUE]
    while not queue.empty():
        message: dramatiq.Message[Any] = dramatiq.Message.decode(queue.get())
        ingest_events(message.args[0])


def answer(metric: str, quantity: int, **kwargs: Any) -> dict[str, Any]:
    return check_limit("cus_1", metric, quantity, **kwargs).to_json()


def test_the_snapshot_answers_as_the_synchronous_read_once_refreshed(
    snapshots: LimitSnapshots,
) -> None:
    use(150)
    use(7, "storage")
    assert answer("api_calls", 1, snapshots=snapshots) == answer("api_calls", 1)  # first: read
    use(100)  # ingested elsewhere: not yet in the snapshot
    assert answer("api_calls", 1, snapshots=snapshots)["used"] == "150"
    assert snapshots.refresh() == 1
    for metric, quantity in (("api_calls", 50), ("api_calls", 51), ("peak_gb", 60)):
        assert answer(metric, quantity, snapshots=snapshots) == answer(metric, quantity)
    assert answer("api_calls", 51, snapshots=snapshots)["reason"] == "hard_limit"


def test_own_unflushed_events_count_at_once(
    snapshots: LimitSnapshots, recorder: tuple[UsageRecorder, StubBroker]
) -> None:
    kept, _ = recorder
    use(290)
    assert check_limit("cus_1", "api_calls", in_flight=kept, snapshots=snapshots).allowed
    for _ in range(10):
        kept.record("cus_1", "api_calls")
    decision = check_limit("cus_1", "api_calls", in_flight=kept, snapshots=snapshots)
    assert (decision.used, decision.pending, decision.allowed) == (300, 10, False)


def test_an_ingested_batch_counts_once_before_and_after_the_refresh(
    snapshots: LimitSnapshots, recorder: tuple[UsageRecorder, StubBroker]
) -> None:
    kept, broker = recorder
    use(100)
    check_limit("cus_1", "api_calls", in_flight=kept, snapshots=snapshots)
    for _ in range(10):
        kept.record("cus_1", "api_calls", 2)
    kept.flush()  # sent as a batch: pending until its marker is seen
    deliver(broker)  # ingested: in the counters, marker written; the snapshot has neither
    stale = check_limit("cus_1", "api_calls", in_flight=kept, snapshots=snapshots)
    assert (stale.used, stale.pending) == (120, 20)  # still pending, not counted twice
    snapshots.refresh()  # counters and marker from the same read
    fresh = check_limit("cus_1", "api_calls", in_flight=kept, snapshots=snapshots)
    assert (fresh.used, fresh.pending) == (120, 0)
    assert kept.pending("cus_1", "api_calls").count == 0
    assert check_limit("cus_1", "api_calls", in_flight=kept).used == 120  # = synchronous


def test_overrides_changed_elsewhere_count_after_a_refresh_here_at_once(
    snapshots: LimitSnapshots,
) -> None:
    assert check_limit("cus_1", "api_calls", 5, snapshots=snapshots).allowed
    # Another process's change: the stored overrides and their revision, nothing of ours.
    override_store.apply_change("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(3)))
    assert check_limit("cus_1", "api_calls", 5, snapshots=snapshots).allowed  # not yet seen
    snapshots.refresh()
    assert check_limit("cus_1", "api_calls", 5, snapshots=snapshots).reason == "hard_limit"
    set_overrides("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(10)))
    assert check_limit("cus_1", "api_calls", 5, snapshots=snapshots).allowed  # ours: at once


def test_customers_not_checked_for_a_while_are_dropped() -> None:
    snapshots = LimitSnapshots(interval=3600, keep=0)
    try:
        check_limit("cus_1", "api_calls", snapshots=snapshots)
        assert snapshots.refresh() == 0  # not checked within `keep`: dropped, nothing read
        use(5)
        assert check_limit("cus_1", "api_calls", snapshots=snapshots).used == 5  # read again
    finally:
        snapshots.stop()


def test_a_stale_snapshot_is_not_used() -> None:
    snapshots = LimitSnapshots(interval=3600, stale_after=0)
    try:
        check_limit("cus_1", "api_calls", snapshots=snapshots)
        use(5)  # no refresh, but the snapshot is too old: read synchronously
        assert check_limit("cus_1", "api_calls", snapshots=snapshots).used == 5
    finally:
        snapshots.stop()


def test_a_forked_child_starts_with_no_snapshot_and_no_thread(
    snapshots: LimitSnapshots,
) -> None:
    check_limit("cus_1", "api_calls", snapshots=snapshots)
    assert snapshots._thread is not None and snapshots._thread.is_alive()
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        clean = snapshots._thread is None and not snapshots._watched
        os._exit(0 if clean else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert snapshots._watched  # the parent keeps its own


def test_a_batch_ingested_by_a_real_worker_counts_once_when_the_thread_has_refreshed() -> None:
    from tasks.broker import make_broker
    from tests.faults.processes import scalar, wait_for, worker

    snapshots = LimitSnapshots(interval=0.05)  # the shipped default; its own thread refreshes
    recorder = UsageRecorder(make_broker(), flush_interval=3600, batch_size=100_000)
    try:
        use(100)
        check_limit("cus_1", "api_calls", in_flight=recorder, snapshots=snapshots)
        for _ in range(10):
            recorder.record("cus_1", "api_calls", 3)
        assert recorder.flush(timeout=10)
        with worker("workers.app"):
            wait_for(lambda: scalar("SELECT count(*) FROM usage_events") == 11)

            def counted() -> tuple[Decimal, Decimal]:
                decision = check_limit(
                    "cus_1", "api_calls", in_flight=recorder, snapshots=snapshots
                )
                # Never less: before and after its marker. (A refresh that reads between the
                # worker's counter write and its marker counts it twice until the next one.)
                assert decision.used >= 130
                return decision.used, decision.pending

            wait_for(lambda: counted() == (Decimal(130), Decimal(0)))
        assert snapshots.refreshes > 0
        assert recorder.pending("cus_1", "api_calls").count == 0
    finally:
        recorder.close(timeout=5)
        snapshots.stop()
