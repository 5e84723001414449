"""The recorder's sender thread: takes batches off the buffer (or the spool) and sends them.

Part of `UsageRecorder` (a base class of it, split out by job): `record()` appends, this thread
sends. Full batches go as soon as they fill, partial ones when the flush interval elapses or
someone waits (flush, close, a full buffer). With the spool, the thread reads its batches from
the spool file, trims what is enqueued, and now and then claims dead processes' files.

Backlog (with `max_hold` > 0; off by default): when the interval elapses while batches wait in
the ingest queue that no worker has taken yet (the workers are behind), a partial batch is held
for up to `max_hold` seconds from its first tick, so it goes as one larger message. Its events
would wait in the queue anyway; a larger batch costs the workers less per event (their
per-batch and per-customer work is done once). Full batches, flush, close and a full buffer
never wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from tasks.batch_sender import BatchSender
from tasks.message import Buffered
from tasks.pending import UnseenUsage
from tasks.spool import SpoolFile, batches, decode_rows, read_lines
from tasks.spool_claim import claim_orphans

log = logging.getLogger(f"meterline.{__name__}")

#: With the spool on: how often the sender looks for dead processes' spool files to claim.
CLAIM_INTERVAL = 10.0


class FlushMarker(threading.Event):
    """Queued by flush(): set once every event appended before it has been enqueued (with
    the spool: once the spool is sent up to `target`)."""

    target = 0


class Flusher:
    """The sending half of `UsageRecorder` (whose constructor sets these attributes)."""

    _batch_size: int
    _flush_interval: float
    _max_hold: float
    _holding_since: float | None  # monotonic time a partial batch was first held
    _sender: BatchSender
    _unseen: UnseenUsage
    _buf: deque[Buffered | FlushMarker]
    _lock: threading.Lock
    _wake: threading.Event
    _space: threading.Condition
    _urgent: bool
    _stopping: bool
    _inflight: int
    _markers: int
    _sent_events: int
    _sent_batches: int
    _claimed: int
    _spool: SpoolFile | None
    _spool_dir: Path | None
    _spool_waiters: list[FlushMarker]
    _next_claim: float

    def _run(self) -> None:
        """The flusher thread: full batches as soon as they fill, partial ones when the
        interval elapses or someone waits (flush, close, a full buffer). With the spool:
        whatever the file holds, each time it wakes; and dead processes' files now and then."""
        while True:
            timed_out = not self._wake.wait(self._flush_interval)
            self._wake.clear()
            urgent = self._urgent or self._stopping
            self._urgent = False
            try:
                if self._spool is not None:
                    self._drain_spool()
                    self._claim_orphans()
                else:
                    self._drain(urgent or (timed_out and not self._hold()))
            except Exception:  # a bug, not an outage: enqueue failures are retried in _send
                # (With the spool nothing is lost: the unsent lines are read again.)
                log.exception("recorder flusher failed: %d events lost", self._inflight)
                self._inflight = 0
            if self._stopping and self._drained():
                return

    def _hold(self) -> bool:
        """Keep the partial batch for now? Yes while the ingest queue has batches no worker
        has taken, for at most `max_hold` seconds from the first tick that held it."""
        if not self._buf or self._max_hold <= 0:
            return False
        now = time.monotonic()
        since = self._holding_since
        if since is not None and now - since >= self._max_hold:
            self._holding_since = None
            return False
        backlog = self._sender.backlog()
        if not backlog:
            self._holding_since = None
            return False
        self._holding_since = now if since is None else since
        return True

    def _drained(self) -> bool:
        spool = self._spool
        if spool is None:
            return not self._buf
        return read_lines(spool.fd, spool.sent).end == spool.sent

    def _drain(self, partial: bool) -> None:
        if partial:
            self._holding_since = None
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

    def _take_batch(self) -> tuple[list[Buffered], FlushMarker | None]:
        """Up to batch_size events off the buffer, stopping at a flush marker (returned, to be
        set once the events before it are sent)."""
        buf = self._buf
        count = min(len(buf), self._batch_size)
        # Counted as in flight before they leave the buffer: record() never sees false room.
        self._inflight = count
        events: list[Buffered] = []
        for _ in range(count):
            item = buf.popleft()
            if isinstance(item, FlushMarker):
                self._inflight = len(events)
                return events, item
            events.append(item)
        return events, None

    def _drain_spool(self) -> None:
        """Send the spool's complete lines in batches, trimming each once it is enqueued; then
        release the flushes that waited for what is sent now."""
        spool = self._spool
        if spool is None:
            return
        while True:
            chunk = read_lines(spool.fd, spool.sent)
            if chunk.end == spool.sent:
                break
            for lines, end in batches(chunk, spool.sent, self._batch_size):
                if lines:
                    events = decode_rows(lines)
                    self._inflight = len(events)
                    self._send(events)
                spool.mark_sent(end)
        with self._lock:
            done = [m for m in self._spool_waiters if m.target <= spool.sent]
            self._spool_waiters = [m for m in self._spool_waiters if m.target > spool.sent]
        for marker in done:
            marker.set()

    def _claim_orphans(self) -> None:
        """Send the spool files of this host's dead producers (every CLAIM_INTERVAL)."""
        now = time.monotonic()
        if now < self._next_claim or self._spool is None or self._spool_dir is None:
            return
        self._next_claim = now + CLAIM_INTERVAL
        report = claim_orphans(
            self._spool_dir, self._sender.send, batch_size=self._batch_size, skip=self._spool.path
        )
        self._claimed += report.events

    def _send(self, events: list[Buffered]) -> None:
        """Enqueue one message for `events` (retried until it goes), counted as pending for
        check_limit before it can be ingested."""
        self._sender.send(events, before=lambda batch_id: self._sent(batch_id, events))
        with self._space:
            self._sent_events += len(events)
            self._sent_batches += 1
            self._inflight = 0
            self._space.notify_all()

    def _sent(self, batch_id: str, events: list[Buffered]) -> None:
        """A batch is about to be enqueued (the recorder counts it as pending)."""
        raise NotImplementedError
