"""Record usage from a web app's request path: validate at once, buffer, send in batches.

`record_usage()` (in `tasks.producer`, on the process's default recorder) costs a few
microseconds and never talks to the network: it checks the event in plain Python (a bad event
raises `ValueError` in the caller, naming the field), stamps it with an `event_id` and the
current time when the caller gave none, and appends it to an in-process buffer. A daemon
thread turns the buffer into ONE Dramatiq message per batch — an enqueue costs a broker round
trip (~230 µs on Redis), so batching is the whole game.

The id and the timestamp are fixed at record time, so a batch that is re-sent after a broker
failure carries the same ids and timestamps: the ledger's dedup (and its partitioning by the
event's period) relies on it. A broker outage is retried forever (`tasks.batch_sender`);
meanwhile the buffer fills and, once it holds `max_buffer` unsent events, `record()` waits up
to `block_timeout` and then raises `BufferFull`.

The message format (a contract: non-Python producers may enqueue it themselves) is described
and built in `tasks.message`; the event's rules are `pricing.events`'.

Stopping: `atexit` sends what is buffered at a normal exit, and the first recorder to start in
the main thread installs a SIGTERM handler that sends it before the process stops; servers that
stop their workers themselves have hooks. See `tasks.shutdown`. A SIGKILLed process loses what
it had buffered (at most one flush interval of events) unless the spool is on: with
`METER_SPOOL_DIR` (or `spool_dir=`), every event is appended to this process's spool file
before `record()` returns, the sender thread reads its batches from that file instead of the
in-memory buffer, and the files of dead processes are claimed and sent (`tasks.spool`).
Split by job: the sender thread is `tasks.flusher`, one batch's enqueue `tasks.batch_sender`,
the account kept for `check_limit` `tasks.pending`, the spool file `tasks.spool`.

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
import weakref
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
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
from tasks.batch_sender import BatchSender
from tasks.flusher import Flusher, FlushMarker
from tasks.message import Buffered, Stamp
from tasks.pending import UnseenUsage
from tasks.shutdown import install_sigterm_handler, main_thread_section
from tasks.spool import SpoolFile, encode_row

log = logging.getLogger(f"meterline.{__name__}")

# The event's rules are the contract's (pricing.events): what this producer refuses is what
# the ingest worker would reject, so a bad event fails in the caller, never in a batch.
_MAX_INT_QUANTITY = int(MAX_QUANTITY)  # an int: the common int quantity compares to it fastest

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
    claimed: int = 0  # events of dead processes' spool files this recorder sent


#: A batch goes when full or when the interval has passed (max_hold, off by default: measured
#: not to pay, bench/README.md). Big batches cost ingest less per event; 200 ms bounds the lag.
DEFAULT_BATCH_SIZE = 20_000
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_MAX_HOLD = 0.0


class UsageRecorder(Flusher):
    """Buffers usage events in this process and sends them to the ingest queue in batches.

    Parameters:
      broker: where to send; default `tasks.broker.get_broker()`, resolved at the first send.
      batch_size: events per message.
      flush_interval: seconds a partial batch may wait before it is sent.
      max_hold: seconds more a partial batch may wait while the workers lag (`tasks.flusher`).
      max_buffer: unsent events held before `record()` waits for room. Concurrent threads may
        overshoot it by at most one event each: the check takes no lock. (With the spool, the
        disk holds the unsent events: no limit.)
      block_timeout: seconds `record()` waits for room before raising `BufferFull`.
      spool_dir: the spool directory; default the `METER_SPOOL_DIR` setting (unset: none).
    """

    def __init__(
        self,
        broker: dramatiq.Broker | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_hold: float = DEFAULT_MAX_HOLD,
        max_buffer: int = 100_000,
        block_timeout: float = 5.0,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if batch_size < 1 or max_buffer < 1 or flush_interval <= 0 or block_timeout < 0:
            raise ValueError(
                "batch_size and max_buffer must be >= 1, flush_interval > 0, block_timeout >= 0"
            )
        if spool_dir is None:
            from storage.settings import get_settings

            spool_dir = get_settings().METER_SPOOL_DIR
        self._spool_dir = None if spool_dir is None else Path(spool_dir)
        self._sender = BatchSender(broker)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_hold = max_hold  # 0 or less: never
        self._max_buffer = max_buffer
        self._block_timeout = block_timeout
        self._closed = False
        self._spool: SpoolFile | None = None
        self._reset()
        _live_recorders.add(self)

    batch_size = property(lambda self: self._batch_size, doc="Events per message.")
    flush_interval = property(lambda self: self._flush_interval, doc="Seconds a batch waits.")
    max_hold = property(lambda self: self._max_hold, doc="Seconds more while workers lag.")

    def _reset(self) -> None:
        """Fresh per-process state: at construction and in a forked child (the parent keeps,
        and sends, the events it had buffered, and keeps its spool file)."""
        if self._spool is not None:
            self._spool.forget_in_child()
        self._spool = None
        self._spool_fd = -1  # record() appends here when >= 0 (the spool is open)
        self._spool_waiters: list[FlushMarker] = []
        self._next_claim = 0.0
        self._buf: deque[Buffered | FlushMarker] = deque()
        self._lock = threading.Lock()  # thread start and flush-marker count; not per record
        self._wake = threading.Event()
        self._space = threading.Condition(threading.Lock())
        self._prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._running = False  # record() starts the thread when this is False
        self._stopping = False
        self._urgent = False  # send partial batches now (flush, close, full buffer)
        self._holding_since: float | None = None  # a partial batch held (tasks.flusher)
        self._inflight = 0  # events taken off the buffer, not yet enqueued
        self._markers = 0  # flush markers in the buffer, not events
        self._sent_events = 0
        self._sent_batches = 0
        self._claimed = 0
        self._unseen = UnseenUsage()  # check_limit's view (tasks.pending)

    @property
    def _outstanding(self) -> dict[str, Any]:
        return self._unseen.outstanding

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
        """Validate one event and buffer it (with the spool: append it to the spool file);
        returns its `event_id`. Raises ValueError naming the bad field (nothing is buffered),
        or BufferFull if the broker is down too long (never with the spool)."""
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
        spool_fd = self._spool_fd
        if spool_fd < 0 and len(self._buf) + self._inflight >= self._max_buffer:
            self._wait_for_space()
        # check_limit's account, before the event can be sent: never below what is pending.
        self._unseen.journal.append((customer_id, metric, quantity))
        item = (event_id, customer_id, metric, quantity, stamp, checked)
        if spool_fd >= 0:
            try:
                os.write(spool_fd, encode_row(item))  # in the page cache when we return
            except BaseException:  # ENOSPC, ...: not recorded, so not pending either
                with main_thread_section():
                    self._unseen.forget((customer_id, metric), quantity)
                raise
            return event_id
        buf = self._buf
        buf.append(item)
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
        marker = FlushMarker()
        with main_thread_section(), self._lock:
            if self._spool is not None:
                marker.target = os.fstat(self._spool.fd).st_size
                self._spool_waiters.append(marker)
            else:
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
        Returns False (and logs) if events were still unsent when `timeout` elapsed (with the
        spool, they stay in its file, for the next recorder on this host to claim)."""
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
            log.error("recorder_closed_unsent events=%d (still retrying)", left)
        elif self._spool is not None and not thread.is_alive():
            self._spool.close(remove=True)
            self._spool, self._spool_fd = None, -1
        return left == 0

    def pending(self, customer_id: str, metric: str) -> Pending:
        """What this recorder holds for a customer × event name that it has not seen
        ingested: buffered, in flight, or sent without an ingest marker yet (see
        `services.limits`). Batches older than `PENDING_WINDOW` are forgotten here."""
        return self._unseen.pending(
            (customer_id, metric), expire_before=time.monotonic() - PENDING_WINDOW
        )

    def ingested(self, batch_ids: Collection[str]) -> None:
        """These batches are in the counters: stop counting their events as pending."""
        self._unseen.ingested(batch_ids)

    def _sent(self, batch_id: str, events: list[Buffered]) -> None:
        now = time.monotonic()
        self._unseen.sent(batch_id, events, now, expire_before=now - PENDING_WINDOW)

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
            send_failures=self._sender.failures,
            buffered=buffered,
            claimed=self._claimed,
        )

    def _pending(self) -> int:
        if self._spool is not None:  # a batch being sent is still in the spool's unsent lines
            return self._spool.unsent_events()
        return len(self._buf) - self._markers + self._inflight

    def _start(self) -> None:
        with main_thread_section(), self._lock:
            if self._closed:
                raise RuntimeError("recorder is closed")
            if not self._running:
                if self._spool_dir is not None and self._spool is None:
                    self._spool = SpoolFile(self._spool_dir, self._prefix)
                    self._spool_fd = self._spool.fd
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
