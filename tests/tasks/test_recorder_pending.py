"""The recorder's account of what it holds for check_limit: buffered and sent events count
until their batch is reported ingested, or until PENDING_WINDOW passes for a sent batch."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from dramatiq.brokers.stub import StubBroker

from tasks.recorder import UsageRecorder


@pytest.fixture
def recorder() -> Iterator[UsageRecorder]:
    recorder = UsageRecorder(StubBroker(), flush_interval=3600, batch_size=100_000)
    yield recorder
    recorder.close(timeout=5)


def sent_batch_ids(recorder: UsageRecorder) -> list[str]:
    return list(recorder._outstanding)


def test_pending_counts_per_customer_and_metric(recorder: UsageRecorder) -> None:
    recorder.record("cus_1", "api_calls", 3)
    recorder.record("cus_1", "api_calls", Decimal("1.5"))
    recorder.record("cus_1", "storage", 7)
    recorder.record("cus_2", "api_calls")
    pending = recorder.pending("cus_1", "api_calls")
    assert (pending.count, pending.total, pending.batches) == (2, Decimal("4.5"), ())
    assert recorder.pending("cus_3", "api_calls").count == 0


def test_sent_batches_count_until_reported_ingested(recorder: UsageRecorder) -> None:
    recorder.record("cus_1", "api_calls", 2)
    recorder.record("cus_2", "api_calls", 5)
    recorder.flush()
    recorder.record("cus_1", "api_calls", 1)  # after the flush: still buffered
    (batch_id,) = sent_batch_ids(recorder)
    pending = recorder.pending("cus_1", "api_calls")
    assert (pending.count, pending.total, pending.batches) == (2, 3, ((batch_id, 1, 2),))
    recorder.ingested([batch_id])
    assert (
        recorder.pending("cus_1", "api_calls").count,
        recorder.pending("cus_1", "api_calls").total,
    ) == (1, 1)
    assert recorder.pending("cus_2", "api_calls").count == 0  # the batch held it too
    recorder.ingested([batch_id])  # told twice: subtracted once
    assert recorder.pending("cus_1", "api_calls").count == 1


def test_a_sent_batch_without_a_marker_is_forgotten_after_the_window(
    recorder: UsageRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.recorder.PENDING_WINDOW", 0.0)
    recorder.record("cus_1", "api_calls", 4)
    assert recorder.pending("cus_1", "api_calls").count == 1  # buffered never expires
    recorder.flush()
    assert recorder.pending("cus_1", "api_calls").count == 0
    assert sent_batch_ids(recorder) == []


def test_a_batch_marker_outlives_the_window_a_producer_waits_for_it() -> None:
    """A marker is written at ingest, after the send the window counts from: it must still
    be there when the producer last looks (at most PENDING_WINDOW after the send), or the
    batch would stay pending (over-counted) until the window ends. It must also not live much
    longer: Redis keeps one per customer × batch."""
    from storage.usage.counters import MARKER_TTL
    from tasks.recorder import PENDING_WINDOW

    assert PENDING_WINDOW < MARKER_TTL <= PENDING_WINDOW + 120
