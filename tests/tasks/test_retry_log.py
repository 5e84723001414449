"""A failing ingest batch, run by a real Dramatiq worker: the log names the batch, its size and
the error at each retry, and never prints the events (log volume and customers' data)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from tasks.ingest import ingest_events, ingest_failed
from tasks.retry_log import install_log_summaries

SECRET = "alice@example.com"  # stands for any customer data inside a batch


def a_batch(count: int) -> dict[str, Any]:
    events = [
        {"event_id": f"e{i}", "customer_id": SECRET, "metric": "api_calls", "quantity": "1",
         "timestamp": "2026-11-27T10:00:00+00:00", "properties": {"email": SECRET}}
        for i in range(count)
    ]  # fmt: skip
    return {"batch_id": "batch-7f3a", "events": events}


@pytest.fixture
def failing_ingest(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The database refuses every batch (as during an outage): the actor's real code runs up
    to the write, which raises."""
    calls: list[str] = []

    def refuse(batch_id: str, events: list[Any], **_: Any) -> None:
        calls.append(batch_id)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("tasks.ingest.ingest_batch", refuse)
    return calls


@pytest.fixture
def worker_broker() -> Iterator[tuple[StubBroker, list[Any]]]:
    """The ingest actor's own function on a stub broker with Dramatiq's default middleware
    (Retries included), two attempts, and an exhausted-retries actor that collects."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    exhausted: list[Any] = []
    collect = dramatiq.actor(
        lambda message, info: exhausted.append(message),
        broker=broker, actor_name="collect_exhausted", queue_name="ingest",
    )  # fmt: skip
    ingest = dramatiq.actor(
        ingest_events.fn,
        broker=broker, actor_name="ingest_events", queue_name="ingest",
        max_retries=1, min_backoff=10, max_backoff=20, on_retry_exhausted="collect_exhausted",
    )  # fmt: skip
    install_log_summaries(ingest, collect)  # as workers/app.py does for the real actors
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        yield broker, exhausted
    finally:
        worker.stop()


def test_retries_log_the_batch_and_the_error_never_the_events(
    failing_ingest: list[str],
    worker_broker: tuple[StubBroker, list[Any]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, exhausted = worker_broker
    caplog.set_level(logging.DEBUG)  # even Dramatiq's debug lines
    broker.get_actor("ingest_events").send(a_batch(500))
    broker.join("ingest", fail_fast=False, timeout=10_000)

    assert failing_ingest == ["batch-7f3a", "batch-7f3a"]  # tried, retried, then given up
    assert len(exhausted) == 1 and exhausted[0]["args"][0]["batch_id"] == "batch-7f3a"
    logged = [record.getMessage() for record in caplog.records]
    text = "\n".join(logged) + "\n".join(caplog.text.splitlines())
    assert SECRET not in text
    ours = [line for line in logged if line.startswith("ingest of batch")]
    assert (
        ours
        == [
            "ingest of batch 'batch-7f3a' (500 events) failed: "
            "OperationalError: server closed the connection unexpectedly"
        ]
        * 2
    )
    assert all(len(line) < 500 for line in logged)
    # The batch is then kept whole with that error (not a bare "retries exhausted").
    kept: list[tuple[Any, str]] = []
    monkeypatch.setattr("tasks.ingest.record_failed_batch", lambda *args: kept.append(args))
    ingest_failed.fn(exhausted[0], {"retries": 1, "max_retries": 1})
    assert kept == [(a_batch(500), "OperationalError: server closed the connection unexpectedly")]
    assert not any(record.exc_info for record in caplog.records if record.levelno >= logging.ERROR)
