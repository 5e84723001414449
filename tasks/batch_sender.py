"""Enqueue one batch of recorded events as one ingest message, retrying until it goes.

A broker outage is retried with exponential backoff, forever, never dropping a batch: the
same message (same batch id, same event ids) is sent again, so a first attempt that did reach
the broker is deduplicated at ingest.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from tasks.broker import get_broker
from tasks.message import BatchMessage, Buffered, encode_event
from tasks.names import INGEST_EVENTS, INGEST_QUEUE

# Part of the recorder (split out of tasks.recorder): its lines keep the recorder's logger.
log = logging.getLogger("meterline.tasks.recorder")

RETRY_FIRST_DELAY = 0.05  # seconds before the first re-send; doubles up to RETRY_MAX_DELAY
RETRY_MAX_DELAY = 5.0


class BatchSender:
    """Sends batches to the ingest queue of `broker` (default: `tasks.broker.get_broker()`,
    resolved at the first send)."""

    def __init__(self, broker: dramatiq.Broker | None) -> None:
        self.broker = broker
        self._declared_on: dramatiq.Broker | None = None
        self.failures = 0  # failed enqueue attempts, each one retried

    def send(self, events: Sequence[Buffered], before: Callable[[str], None] | None = None) -> str:
        """Enqueue `events` as one message; returns its batch id. `before(batch_id)` runs
        once, before the first attempt (what is sent may be ingested at once)."""
        batch_id = str(uuid.uuid4())
        batch = {"batch_id": batch_id, "events": [encode_event(e) for e in events]}
        message: dramatiq.Message[Any] = BatchMessage(
            queue_name=INGEST_QUEUE, actor_name=INGEST_EVENTS, args=(batch,), kwargs={}, options={}
        )
        if before is not None:
            before(batch_id)
        delay = RETRY_FIRST_DELAY
        failures = 0
        while True:
            try:
                self._ingest_broker().enqueue(message)
                break
            except Exception as exc:
                failures += 1
                self.failures += 1
                log.warning(
                    "enqueue of batch %s (%d events) failed (attempt %d), retry in %.2fs: %s: %s",
                    batch_id, len(events), failures, delay, type(exc).__name__, exc,
                )  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        if failures:
            log.info("batch %s enqueued after %d failed attempts", batch_id, failures)
        return batch_id

    def backlog(self) -> int | None:
        """Batches waiting in the ingest queue that no worker has taken yet (one round trip to
        a Redis broker); None when that cannot be told (another broker, or it does not
        answer: the send that follows retries)."""
        try:
            broker = self._ingest_broker()
            if not isinstance(broker, RedisBroker):
                return None
            return int(broker.client.llen(f"{broker.namespace}:{INGEST_QUEUE}"))
        except Exception:  # an outage shows in the send, which retries it
            return None

    def _ingest_broker(self) -> dramatiq.Broker:
        if self.broker is None:
            self.broker = get_broker()
        if self._declared_on is not self.broker:
            self.broker.declare_queue(INGEST_QUEUE)
            self._declared_on = self.broker
        return self.broker
