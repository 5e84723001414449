"""Prompt delivery: a worker that processed a message which wrote outbox rows sends a delivery
run at once, so the webhook goes out without waiting for the scheduler's sweep (no scheduler
runs here at all). A message that wrote nothing sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

import tasks.notify
from storage import outbox
from storage.settings import reset_settings
from tasks import names
from tasks.broker import make_broker
from tasks.prompt_delivery import PromptDelivery
from tests.conftest import SessionServers
from tests.webhook_receiver import Receiver, receiver

SECRET = "whsec_prompt_0123456789"


class Sent(Middleware):
    """Keeps the actor name of every message enqueued."""

    def __init__(self) -> None:
        self.actors: list[str] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.actors.append(message.actor_name)


@pytest.fixture
def hook(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with receiver() as server:
        monkeypatch.setenv("METER_WEBHOOK_URL", server.url)
        monkeypatch.setenv("METER_WEBHOOK_SECRET", SECRET)
        reset_settings()
        yield server
    monkeypatch.undo()
    reset_settings()


def test_a_message_that_wrote_outbox_rows_gets_its_delivery_run_at_once(
    hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = StubBroker()
    broker.add_middleware(PromptDelivery())
    sent = Sent()
    broker.add_middleware(sent)
    broker.emit_after("process_boot")
    monkeypatch.setattr(tasks.notify.deliver_notifications, "broker", broker)
    broker.declare_actor(tasks.notify.deliver_notifications)

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def quiet() -> None:
        """Writes nothing to the outbox."""

    @dramatiq.actor(broker=broker, queue_name="work", max_retries=0)
    def alerting(n: int) -> None:
        outbox.enqueue("usage.threshold_reached", {"customer_id": "cus_1", "n": n})

    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        quiet.send()
        broker.join("work", timeout=30_000)
        assert sent.actors == ["quiet"]  # nothing to deliver: no delivery run

        alerting.send(1)
        alerting.send(2)
        broker.join("work", timeout=30_000)
        broker.join(names.NOTIFY_QUEUE, timeout=30_000)
        assert hook.wait_for(2)
    finally:
        worker.stop()
    assert sorted(d["payload"]["n"] for d in hook.delivered()) == [1, 2]
    assert sent.actors.count(names.DELIVER_NOTIFICATIONS) == 2  # one per writing message
    assert outbox.pending_count() == 0


def test_every_broker_meterline_makes_has_the_middleware(test_servers: SessionServers) -> None:
    broker = make_broker(test_servers.redis_url)
    try:
        assert any(isinstance(m, PromptDelivery) for m in broker.middleware)
    finally:
        broker.close()


def test_meter_webhook_prompt_off_leaves_delivery_to_the_sweep(
    test_servers: SessionServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_WEBHOOK_PROMPT", "0")
    reset_settings()
    try:
        broker = make_broker(test_servers.redis_url)
        assert not any(isinstance(m, PromptDelivery) for m in broker.middleware)
        broker.close()
    finally:
        monkeypatch.undo()
        reset_settings()
