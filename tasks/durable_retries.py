"""Dramatiq's `Retries` middleware, made to keep a failed message when its broker is down.

A message that fails is retried by enqueueing a copy with a delay, after which the original is
acknowledged. Dramatiq runs that enqueue inside `emit_after`, which logs and swallows any
error: when the actor failed *because* the broker's Redis was unreachable (a restart), the
enqueue of the retry fails too, and once the connection is back the worker acknowledges the
original — the batch is gone, with nothing queued to retry it (seen in
`tests/faults/test_server_restarts.py`). Here the enqueue is retried until the broker answers,
as Dramatiq itself retries an acknowledgement, so a message is acknowledged only once its retry
(or its dead letter and `on_retry_exhausted` message) is in the broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
import redis
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import Retries

log = logging.getLogger(f"meterline.{__name__}")

#: Seconds between two attempts at enqueueing a retry while the broker is unreachable.
RETRY_ENQUEUE_DELAY_S = 1.0

_UNREACHABLE = (BrokerConnectionError, redis.ConnectionError, redis.TimeoutError)


class DurableRetries(Retries):
    """`Retries` whose retry enqueue waits out a broker outage instead of losing the message."""

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        saved = dict(message.options)  # the parent counts the attempt before it enqueues
        attempt = 0
        while True:
            try:
                super().after_process_message(  # type: ignore[no-untyped-call]
                    broker, message, result=result, exception=exception
                )
                return
            except _UNREACHABLE as exc:
                attempt += 1
                message.options.clear()
                message.options.update(saved)
                log.warning(
                    "retry of message %s not enqueued (broker unreachable: %s); attempt %d,"
                    " trying again in %ss",
                    message.message_id,
                    type(exc).__name__,
                    attempt,
                    RETRY_ENQUEUE_DELAY_S,
                )
                time.sleep(RETRY_ENQUEUE_DELAY_S)


def install_durable_retries(broker: dramatiq.Broker) -> None:
    """Replace the broker's `Retries` (added by default) with `DurableRetries`, same options."""
    for index, middleware in enumerate(broker.middleware):
        if type(middleware) is Retries:
            durable = DurableRetries(
                max_retries=middleware.max_retries,
                min_backoff=middleware.min_backoff,
                max_backoff=middleware.max_backoff,
                retry_when=middleware.retry_when,
            )
            broker.middleware[index] = durable
