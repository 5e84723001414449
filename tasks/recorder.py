"""Record usage from a web app's request path: validate at once, buffer, send in batches.

`record_usage()` (in `tasks.producer`, on the process's default recorder) costs a few
microseconds and never talks to the network: it checks the event in plain Python (a bad event
raises `ValueError` in the caller, naming the field), stamps it with an `event_id` and the
current time when the caller gave none, and appends it to an in-process buffer. A daemon
thread turns the buffer into ONE Dramatiq message per batch — an enqueue costs a broker round
trip (~230 µs on Redis), so batching is the whole game.

The id and the timestamp are fixed at record time, so a batch that is re-sent after a broker
failure carries the same ids and timestamps: the ledger's dedup (and its partitioning by the
event's period) relies on it. A broker outage is retried with exponential backoff, forever,
never dropping a batch; meanwhile the buffer fills and, once it holds `max_buffer` unsent
events, `record()` waits up to `block_timeout` and then raises `BufferFull`.

The message format (a contract: non-Python producers may enqueue it themselves) is described
and built in `tasks.message`; the event's rules are `pricing.events`'.

Stopping: `atexit` sends what is buffered at a normal exit, and the first recorder to start in
the main thread installs a SIGTERM handler that sends it before the process stops; servers that
stop their workers themselves have hooks. See `tasks.shutdown`. A SIGKILLed process loses what
it had buffered: at most one flush interval of events.

Delivery is at least once: the same batch may arrive twice (a re-send after a failure whose
first attempt did reach the broker); the ingest actor skips events whose ``event_id`` it has.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import secrets
import string
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import dramatiq

from pricing.errors import MeterlineError
from pricing.events import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    check_id,
    check_properties,
    check_quantity,
    check_timestamp,
)
from pricing.limits import Pending
from tasks.broker import get_broker
from tasks.message import BatchMessage, Buffered, Stamp, encode_event
from tasks.names import INGEST_EVENTS, INGEST_QUEUE
from tasks.shutdown import install_sigterm_handler, main_thread_section

log = logging.getLogger(f"meterline.{__name__}")

# The event's rules are the contract's (pricing.events): what this producer refuses is what
# the ingest worker would reject, so a bad event fails in the caller, never in a batch.
_MAX_INT_QUANTITY = int(MAX_QUANTITY)  # an int: the common int quantity compares to it fastest

RETRY_FIRST_DELAY = 0.05  # seconds before the first re-send; doubles up to RETRY_MAX_DELAY
RETRY_MAX_DELAY = 5.0
EXIT_FLUSH_TIMEOUT = 10.0  # how long interpreter exit waits for buffered events to be sent
_LIVENESS_POLL = 0.5  # flush() re-checks that the flusher thread is alive this often

#: Seconds a sent batch counts as pending for `check_limit` when no ingest marker shows up
#: (a batch that waits in a long queue, or ends as a failed batch): then it is forgotten.
PENDING_WINDOW = 300.0

_PREFIX_ALPHABET = string.ascii_letters + string.digits
_PREFIX_LENGTH = 12  # 62**12 ≈ 2**71: prefixes of distinct processes do not collide


class BufferFull(MeterlineError, RuntimeError):
    """`max_buffer` events are waiting to be sent and none was sent within `block_timeout`."""


@dataclass(frozen=True)
class RecorderStats:
    """A snapshot of a recorder's counters (this process only; reset in a forked child)."""

    recorded: int  # accepted by record(): sent_events + buffered
    sent_events: int
    sent_batches: int
    send_failures: int  # failed enqueue attempts, each one retried
    buffered: int  # recorded, not yet enqueued


class _FlushMarker(threading.Event):
    """Queued by flush(): set once every event appended before it has been enqueued."""


#: A batch goes when full or when the interval has passed. Big batches cost ingest less per
#: event (PostgreSQL merges a customer's rows once per batch); 200 ms bounds the lag to the
#: live counters (README, Performance).
DEFAULT_BATCH_SIZE = 20_000
DEFAULT_FLUSH_INTERVAL = 0.2


class UsageRecorder:
    """Buffers usage events in this process and sends them to the ingest queue in batches.

    Parameters:
      broker: where to send; default `tasks.broker.get_broker()`, resolved at the first send.
      batch_size: events per message.
      flush_interval: seconds a partial batch may wait before it is sent.
      max_buffer: unsent events held before `record()` waits for room. Concurrent threads may
        overshoot it by at most one event each: the check takes no lock.
      block_timeout: seconds `record()` waits for room before raising `BufferFull`.
    """

    def __init__(
        self,
        broker: dramatiq.Broker | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = 100_000,
        block_timeout: float = 5.0,
    ) -> None:
        if batch_size < 1 or max_buffer < 1 or flush_interval <= 0 or block_timeout < 0:
            raise ValueError(
                "batch_size and max_buffer must be >= 1, flush_interval > 0, block_timeout >= 0"
            )
        self._broker = broker
        self._declared_on: dramatiq.Broker | None = None
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._block_timeout = block_timeout
        self._closed = False
        self._reset()
        _live_recorders.add(self)

    batch_size = property(lambda self: self._batch_size, doc="Events per message.")
    flush_interval = property(lambda self: self._flush_interval, doc="Seconds a batch waits.")

    def _reset(self) -> None:
        """Fresh per-process state: at construction and in a forked child (the parent keeps,
        and sends, the events it had buffered)."""
        self._buf: deque[Buffered | _FlushMarker] = deque()
        self._lock = threading.Lock()  # thread start and flush-marker count; not per record
        self._wake = threading.Event()
        self._space = threading.Condition(threading.Lock())
        self._prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._running = False  # record() starts the thread when this is False
        self._stopping = False
        self._urgent = False  # send partial batches now (flush, close, full buffer)
        self._inflight = 0  # events taken off the buffer, not yet enqueued
        self._markers = 0  # flush markers in the buffer, not events
        self._sent_events = 0
        self._sent_batches = 0
        self._send_failures = 0
        # check_limit's view: per customer × metric, [events, quantity] recorded and not yet
        # seen ingested; per sent batch, (sent at, its sums) until its marker is seen.
        self._unseen: dict[tuple[str, str], list[Any]] = {}
        self._unseen_lock = threading.Lock()
        self._outstanding: dict[str, tuple[float, dict[tuple[str, str], list[Any]]]] = {}

    def record(
        self,
        customer_id: str,
        metric: str,
        quantity: int | float | Decimal = 1,
        *,
        event_id: str | None = None,
        timestamp: datetime | None = None,
        properties: dict[str, Any] | None = None,
    ) -> str:
        """Validate one event and buffer it; returns its `event_id`. Raises ValueError naming
        the bad field (nothing is buffered), or BufferFull if the broker is down too long."""
        # Fast paths first: the common call must stay in the low microseconds. A plain ASCII
        # id without NUL needs no more; anything else gets the contract's full check.
        if (
            type(customer_id) is not str
            or not 0 < len(customer_id) <= MAX_ID_LENGTH
            or not customer_id.isascii()
            or "\x00" in customer_id
        ):
            customer_id = check_id("customer_id", customer_id)
        if (
            type(metric) is not str
            or not 0 < len(metric) <= MAX_ID_LENGTH
            or not metric.isascii()
            or "\x00" in metric
        ):
            metric = check_id("metric", metric)
        if type(quantity) is not int or not -_MAX_INT_QUANTITY < quantity < _MAX_INT_QUANTITY:
            quantity = check_quantity(quantity)
        if event_id is None:
            event_id = f"{self._prefix}-{next(self._seq)}"
        elif (
            type(event_id) is not str
            or not 0 < len(event_id) <= MAX_ID_LENGTH
            or not event_id.isascii()
            or "\x00" in event_id
        ):
            event_id = check_id("event_id", event_id)
        stamp: Stamp = time.time_ns() if timestamp is None else check_timestamp(timestamp)
        checked = None if properties is None else check_properties(properties)
        if not self._running:
            self._start()
        buf = self._buf
        if len(buf) + self._inflight >= self._max_buffer:
            self._wait_for_space()
        key = (customer_id, metric)
        with self._unseen_lock:  # counted before it can be sent: never below what is pending
            sums = self._unseen.get(key)
            if sums is None:
                self._unseen[key] = [1, quantity]
            else:
                sums[0] += 1
                sums[1] += quantity
        buf.append((event_id, customer_id, metric, quantity, stamp, checked))
        if len(buf) >= self._batch_size and not self._wake.is_set():
            with main_thread_section():  # Event.set holds the lock the sender waits on
                self._wake.set()
        return event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event recorded before this call has been enqueued. Returns False
        if `timeout` elapsed first; the events stay buffered and keep being retried."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._pending() == 0
        marker = _FlushMarker()
        with main_thread_section(), self._lock:
            self._markers += 1
            self._buf.append(marker)
            self._urgent = True
            self._wake.set()
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            with main_thread_section():  # a SIGTERM here waits at most _LIVENESS_POLL
                done = marker.wait(min(_LIVENESS_POLL, max(remaining, 0.0)))
            if done:
                return True
            if not thread.is_alive():  # closed concurrently: the marker came too late
                return self._pending() == 0
            if remaining <= 0:
                return False

    def close(self, timeout: float | None = None) -> bool:
        """Send everything buffered and stop the thread; later `record()` calls raise.
        Returns False (and logs) if events were still unsent when `timeout` elapsed."""
        with main_thread_section(), self._lock:
            self._closed = True
            self._running = False
            thread = self._thread
            if thread is None:
                return True
            self._stopping = True
            self._wake.set()
        thread.join(timeout)
        left = self._pending()
        if left:
            log.error("recorder closed with %d events not yet enqueued (still retrying)", left)
        return left == 0

    def pending(self, customer_id: str, metric: str) -> Pending:
        """What this recorder holds for a customer × event name that it has not seen
        ingested: buffered, in flight, or sent without an ingest marker yet (see
        `services.limits`). Batches older than `PENDING_WINDOW` are forgotten here."""
        key = (customer_id, metric)
        self._expire(time.monotonic() - PENDING_WINDOW)
        with self._unseen_lock:
            sums = self._unseen.get(key)
            if sums is None:
                return Pending()
            batches = tuple(
                (batch_id, part[0], Decimal(part[1]))
                for batch_id, (_, parts) in self._outstanding.items()
                if (part := parts.get(key)) is not None
            )
            return Pending(sums[0], Decimal(sums[1]), batches)

    def ingested(self, batch_ids: Collection[str]) -> None:
        """These batches are in the counters: stop counting their events as pending."""
        with self._unseen_lock:
            for batch_id in batch_ids:
                entry = self._outstanding.pop(batch_id, None)
                if entry is not None:
                    self._subtract(entry[1])

    def _expire(self, before: float) -> None:
        if not self._outstanding:
            return
        with self._unseen_lock:
            old = []
            for batch_id, (sent_at, _) in self._outstanding.items():  # oldest first
                if sent_at >= before:
                    break
                old.append(batch_id)
            for batch_id in old:
                self._subtract(self._outstanding.pop(batch_id)[1])

    def _subtract(self, parts: dict[tuple[str, str], list[Any]]) -> None:
        for key, (count, total) in parts.items():
            sums = self._unseen.get(key)
            if sums is None:
                continue
            sums[0] -= count
            sums[1] -= total
            if sums[0] <= 0:
                del self._unseen[key]

    def _sent(self, batch_id: str, events: list[Buffered]) -> None:
        parts: dict[tuple[str, str], list[Any]] = {}
        for event in events:
            part = parts.get((event[1], event[2]))
            if part is None:
                parts[(event[1], event[2])] = [1, event[3]]
            else:
                part[0] += 1
                part[1] += event[3]
        now = time.monotonic()
        with self._unseen_lock:
            self._outstanding[batch_id] = (now, parts)
        self._expire(now - PENDING_WINDOW)

    @property
    def stats(self) -> RecorderStats:
        # The flusher moves a batch from in flight to sent under this lock.
        with main_thread_section(), self._space:
            buffered = self._pending()
            sent_events, sent_batches = self._sent_events, self._sent_batches
        return RecorderStats(
            recorded=sent_events + buffered,
            sent_events=sent_events,
            sent_batches=sent_batches,
            send_failures=self._send_failures,
            buffered=buffered,
        )

    def _pending(self) -> int:
        return len(self._buf) - self._markers + self._inflight

    def _start(self) -> None:
        with main_thread_section(), self._lock:
            if self._closed:
                raise RuntimeError("recorder is closed")
            if not self._running:
                self._thread = threading.Thread(
                    target=self._run, name="meterline-recorder", daemon=True
                )
                self._thread.start()
                self._running = True
        install_sigterm_handler()  # only in the main thread; elsewhere it does nothing

    def _wait_for_space(self) -> None:
        deadline = time.monotonic() + self._block_timeout
        self._urgent = True
        with main_thread_section():
            self._wake.set()
        with main_thread_section(), self._space:
            while len(self._buf) + self._inflight >= self._max_buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BufferFull(
                        f"buffer: {self._max_buffer} events not yet enqueued after waiting "
                        f"{self._block_timeout}s; is the broker reachable?"
                    )
                self._space.wait(remaining)

    def _run(self) -> None:
        """The flusher thread: full batches as soon as they fill, partial ones when the
        interval elapses or someone waits (flush, close, a full buffer)."""
        while True:
            timed_out = not self._wake.wait(self._flush_interval)
            self._wake.clear()
            partial = timed_out or self._urgent or self._stopping
            self._urgent = False
            try:
                self._drain(partial)
            except Exception:  # a bug, not an outage: enqueue failures are retried in _send
                log.exception("recorder flusher failed: %d events lost", self._inflight)
                self._inflight = 0
            if self._stopping and not self._buf:
                return

    def _drain(self, partial: bool) -> None:
        while self._buf and (partial or len(self._buf) >= self._batch_size):
            events, marker = self._take_batch()
            try:
                if events:
                    self._send(events)
            finally:
                if marker is not None:
                    with self._lock:
                        self._markers -= 1
                    marker.set()

    def _take_batch(self) -> tuple[list[Buffered], _FlushMarker | None]:
        """Up to batch_size events off the buffer, stopping at a flush marker (returned, to be
        set once the events before it are sent)."""
        buf = self._buf
        count = min(len(buf), self._batch_size)
        # Counted as in flight before they leave the buffer: record() never sees false room.
        self._inflight = count
        events: list[Buffered] = []
        for _ in range(count):
            item = buf.popleft()
            if isinstance(item, _FlushMarker):
                self._inflight = len(events)
                return events, item
            events.append(item)
        return events, None

    def _send(self, events: list[Buffered]) -> None:
        """Enqueue one message for `events`, retrying the same message until it goes."""
        batch_id = str(uuid.uuid4())
        batch = {"batch_id": batch_id, "events": [encode_event(e) for e in events]}
        message: dramatiq.Message[Any] = BatchMessage(
            queue_name=INGEST_QUEUE, actor_name=INGEST_EVENTS, args=(batch,), kwargs={}, options={}
        )
        delay = RETRY_FIRST_DELAY
        failures = 0
        self._sent(batch_id, events)  # before it can be ingested and marked
        while True:
            try:
                self._ingest_broker().enqueue(message)
                break
            except Exception as exc:
                failures += 1
                self._send_failures += 1
                log.warning(
                    "enqueue of batch %s (%d events) failed (attempt %d), retry in %.2fs: %s: %s",
                    batch["batch_id"], len(events), failures, delay, type(exc).__name__, exc,
                )  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        if failures:
            log.info("batch %s enqueued after %d failed attempts", batch["batch_id"], failures)
        with self._space:
            self._sent_events += len(events)
            self._sent_batches += 1
            self._inflight = 0
            self._space.notify_all()

    def _ingest_broker(self) -> dramatiq.Broker:
        if self._broker is None:
            self._broker = get_broker()
        if self._declared_on is not self._broker:
            self._broker.declare_queue(INGEST_QUEUE)
            self._declared_on = self._broker
        return self._broker


# --- process-wide plumbing: fork and exit ---------------------------------

_live_recorders: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()


def _reset_in_child() -> None:
    for recorder in list(_live_recorders):
        recorder._reset()


def flush_all_recorders(timeout: float) -> bool:
    """Send what every recorder of this process has buffered, within `timeout` seconds in all;
    False if events were still unsent then (what the shutdown hooks call)."""
    deadline = time.monotonic() + timeout
    sent = True
    for recorder in list(_live_recorders):
        sent = recorder.flush(max(deadline - time.monotonic(), 0.0)) and sent
    return sent


def _close_at_exit() -> None:
    for recorder in list(_live_recorders):
        recorder.close(timeout=EXIT_FLUSH_TIMEOUT)


os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(_close_at_exit)
