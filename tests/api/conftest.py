"""The HTTP API in process (FastAPI's TestClient) against the real PostgreSQL and Redis.

The API queues events through the process's default recorder. Here that recorder sends to a
StubBroker (the queue is not the point of these tests), and `ingest_queued` hands what was
queued to the real ingest actor, as a worker would. `tests/api/test_http_process.py` runs the
whole thing with uvicorn, a Redis broker and a real worker instead.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from api.app import create_app
from services import api_keys
from services.customers import create_customer
from storage.catalog.plans import apply_plan
from storage.settings import reset_settings
from tasks import broker as broker_module
from tasks import configure_recorder
from tasks.broker import make_broker
from tasks.names import INGEST_QUEUE
from tests.conftest import SessionServers
from tests.metering.helpers import PLAN

Headers = dict[str, str]


@contextlib.contextmanager
def process_broker(broker: dramatiq.Broker) -> Iterator[dramatiq.Broker]:
    """`broker` as the process's broker, and a fresh default recorder sending to it; the
    previous broker is put back afterwards."""
    for module in ("tasks.billing", "tasks.ingest"):  # the actors the queued messages need
        importlib.import_module(module)
    previous = broker_module._broker
    broker_module.install(broker)
    configure_recorder()
    try:
        yield broker
    finally:
        configure_recorder()
        if previous is not None:
            broker_module.install(previous)
        else:
            broker_module.install(broker_module._PLACEHOLDER)
            broker_module._broker = None


@pytest.fixture
def stub_broker(clean_state: None) -> Iterator[StubBroker]:
    with process_broker(StubBroker()) as stub:
        yield stub


@pytest.fixture
def redis_broker(clean_state: None, test_servers: SessionServers) -> Iterator[dramatiq.Broker]:
    """A Redis broker on the session's Redis database (what `meter web` runs with)."""
    broker = make_broker(test_servers.redis_url)
    with process_broker(broker):
        yield broker
    broker.close()


@pytest.fixture
def ingest_queued(stub_broker: StubBroker) -> Callable[[], int]:
    """Run every queued ingest message through the ingest actor; how many it ran."""
    from tasks.ingest import ingest_events

    def run() -> int:
        queue = stub_broker.queues[INGEST_QUEUE]
        count = 0
        while not queue.empty():
            message = dramatiq.Message.decode(queue.get_nowait())
            if message.actor_name == ingest_events.actor_name:
                ingest_events.fn(*message.args)
                count += 1
        return count

    return run


@pytest.fixture
def client(stub_broker: StubBroker) -> Iterator[TestClient]:
    with TestClient(create_app(start_broker=False), raise_server_exceptions=False) as test:
        yield test


@pytest.fixture
def customers(clean_state: None) -> list[str]:
    """Two customers on the metering tests' plan, started 60 days ago."""
    from pricing.plans import load_plan

    apply_plan(load_plan(PLAN))
    start = datetime.now(UTC) - timedelta(days=60)
    for customer_id in ("cus_a", "cus_b"):
        create_customer(customer_id, "live", starts_at=start)
    return ["cus_a", "cus_b"]


@pytest.fixture
def key_for(customers: list[str]) -> Callable[[str], Headers]:
    """Headers carrying a new key of the given scope (`ops`, `ingest`, `customer:ID`)."""

    def make(scope: str) -> Headers:
        _, text = api_keys.create(scope)
        return {"Authorization": f"Bearer {text}"}

    return make


@pytest.fixture
def env_setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Set a setting through the environment for one test."""

    def set_(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        reset_settings()

    yield set_
    monkeypatch.undo()
    reset_settings()


def event(customer_id: str = "cus_a", **fields: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "metric": "api_calls", **fields}
