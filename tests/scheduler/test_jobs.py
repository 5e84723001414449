"""The job table's enqueue: a job sends one message to its actor, by name, on the broker."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import tasks.broker
import tasks.maintenance
import tasks.notify
from scheduler.jobs import JOBS, enqueue_actor


@pytest.fixture
def stub_broker(monkeypatch: pytest.MonkeyPatch) -> StubBroker:
    """A StubBroker in place of the shared one, with an actor for every job of the table."""
    stub = StubBroker()
    for job in JOBS:
        dramatiq.Actor(
            lambda: None,
            broker=stub,
            actor_name=job.actor,
            queue_name=f"q_{job.actor}",
            priority=0,
            options={},
        )
    monkeypatch.setattr(tasks.broker, "get_broker", lambda: stub)
    return stub


def test_each_job_enqueues_one_message_to_its_actor(stub_broker: StubBroker) -> None:
    for job in JOBS:
        enqueue_actor(job.actor)
    for job in JOBS:
        queue = stub_broker.queues[f"q_{job.actor}"]
        assert queue.qsize() == 1
        message = dramatiq.Message.decode(queue.get())
        assert message.actor_name == job.actor
        assert message.args == () and message.kwargs == {}


def test_the_real_actors_are_declared_with_the_names_the_table_uses() -> None:
    names = {job.actor for job in JOBS}
    assert tasks.maintenance.reconcile_counters.actor_name in names
    assert tasks.notify.deliver_notifications.actor_name in names
