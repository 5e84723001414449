"""`DurableRetries`: a failed message whose retry cannot be enqueued (the broker is down) is
retried until the broker answers, counted once, never acknowledged without its retry."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from tasks import durable_retries
from tasks.durable_retries import DurableRetries, install_durable_retries


class FlakyBroker(StubBroker):
    """Refuses the first `failures` enqueues with the error a stopped Redis gives."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.enqueued: list[tuple[dramatiq.Message[Any], int | None]] = []

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399.")
        self.enqueued.append((message, delay))
        return message


def test_the_retry_is_enqueued_once_the_broker_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable_retries, "RETRY_ENQUEUE_DELAY_S", 0.0)
    broker = FlakyBroker(failures=3)
    install_durable_retries(broker)
    assert [type(m) for m in broker.middleware].count(DurableRetries) == 1
    assert not any(type(m) is Retries for m in broker.middleware)

    @dramatiq.actor(broker=broker, max_retries=5, min_backoff=100)
    def fails() -> None:
        raise RuntimeError("PostgreSQL is down")

    message = fails.message()
    proxy = dramatiq.MessageProxy(message)
    middleware = next(m for m in broker.middleware if isinstance(m, DurableRetries))
    middleware.after_process_message(broker, proxy, exception=RuntimeError("down"))

    assert broker.failures == 0
    assert len(broker.enqueued) == 1  # exactly one retry, after three refusals
    retried, delay = broker.enqueued[0]
    assert retried.options["retries"] == 1  # the attempt counted once, not four times
    assert delay is not None and delay > 0
    assert not proxy.failed  # acknowledged now that its retry is safe in the broker
