"""Per-process snapshots of what `check_limit` reads from Redis, refreshed in the background.

The synchronous check waits on one Redis round trip per call, and under load that round trip's
tail is the check's tail. With snapshots (`tasks.check_limit`, every
`METER_LIMIT_REFRESH_MS`; 0 turns them off) a customer's first check reads synchronously and
keeps what it read; from then on ONE daemon thread re-reads, in one pipelined round trip, the
counters, the overrides revision and the recorder's batch markers of every customer checked in
the last `keep` seconds (customers not checked for longer are dropped), and a check answers
from that snapshot plus this process's pending events, without network I/O.

Consistency. A snapshot's markers and counters come from the same pipelined read, markers
first: a batch whose marker it saw is in its counters. A check reads the recorder's pending
events BEFORE the snapshot, and a snapshot is replaced only by one at least as new (counter
version not lower), so a batch the recorder stopped counting (its marker was seen) is in every
snapshot a later check can read: this process's own events are never under-counted. Another
process's events appear within its flush interval + ingest + one refresh interval. A snapshot
older than `stale_after` (the thread stalled, Redis unreachable) is not used: the check reads
synchronously (and fails as it would have).

Fork safety: the thread starts on the first check in the process that checks (gunicorn's
preforked children each start their own); a child forked from a process that had one starts
with no snapshots and no thread. `atexit` stops the thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pricing.limits import Pending
from pricing.metering import SegmentState
from storage import db
from storage.catalog import limits as override_store
from storage.usage import counters

log = logging.getLogger(__name__)

KEEP_SECONDS = 10.0  # a customer not checked for this long is no longer refreshed


class PendingSource(Protocol):
    """The recorder's account of its unseen usage (`services.limits.InFlight`'s read side)."""

    def pending(self, customer_id: str, event_name: str) -> Pending: ...


@dataclass(frozen=True)
class CounterSnapshot:
    """One customer's segment counters, overrides revision and seen batch markers, read in
    one round trip (`seen`: the batches whose marker was read; their events are in `state`)."""

    segment_start: datetime
    unique_metrics: tuple[str, ...]
    version: int
    state: SegmentState
    uniques: dict[str, int]
    revision: str
    seen: frozenset[str]
    read_at: float  # time.monotonic() when the read was sent


class _Watched:
    """A customer being refreshed: its latest snapshot and what its checks asked about."""

    __slots__ = ("checked_at", "event_names", "in_flight", "snapshot")

    def __init__(self, snapshot: CounterSnapshot | None, checked_at: float) -> None:
        self.snapshot = snapshot
        self.checked_at = checked_at
        self.event_names: set[str] = set()
        self.in_flight: PendingSource | None = None


def marker_batches(watched: _Watched, customer_id: str) -> list[str]:
    """The batches the customer's recorder still counts as pending, for the event names its
    checks asked about: the markers a refresh reads."""
    if watched.in_flight is None:
        return []
    batch_ids: dict[str, None] = {}
    for event_name in list(watched.event_names):
        for batch_id, _, _ in watched.in_flight.pending(customer_id, event_name).batches:
            batch_ids[batch_id] = None
    return list(batch_ids)


class LimitSnapshots:
    """The snapshots of one process, and the thread that refreshes them every `interval` s."""

    def __init__(
        self, interval: float, keep: float = KEEP_SECONDS, stale_after: float | None = None
    ) -> None:
        self.interval = interval
        self.keep = keep
        self.stale_after = stale_after if stale_after is not None else max(1.0, 20 * interval)
        self.refreshes = 0
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def get(
        self,
        customer_id: str,
        segment_start: datetime,
        unique_metrics: Sequence[str],
        event_name: str,
        in_flight: PendingSource | None,
    ) -> CounterSnapshot | None:
        """The customer's snapshot for this segment if it is fresh enough (None: read
        synchronously and `put` the result). Marks the customer as checked."""
        now = time.monotonic()
        watched = self._watched.get(customer_id)
        if watched is None:
            return None
        watched.checked_at = now
        watched.in_flight = in_flight
        if event_name not in watched.event_names:
            watched.event_names.add(event_name)
        snapshot = watched.snapshot
        if (
            snapshot is None
            or snapshot.segment_start != segment_start
            or snapshot.unique_metrics != tuple(unique_metrics)
            or now - snapshot.read_at > self.stale_after
        ):
            return None
        return snapshot

    def put(
        self,
        customer_id: str,
        snapshot: CounterSnapshot,
        event_name: str,
        in_flight: PendingSource | None,
    ) -> None:
        """Keep a synchronous read's result and refresh the customer from now on."""
        self._ensure_thread()
        with self._lock:
            watched = self._watched.get(customer_id)
            if watched is None:
                watched = self._watched[customer_id] = _Watched(None, time.monotonic())
            watched.event_names.add(event_name)
            watched.in_flight = in_flight
            self._replace(watched, snapshot)

    def refresh(self) -> int:
        """Re-read every customer checked within `keep` seconds in one round trip; drop the
        others. Returns how many were read."""
        now = time.monotonic()
        with self._lock:
            idle = [c for c, w in self._watched.items() if now - w.checked_at > self.keep]
            for customer_id in idle:
                del self._watched[customer_id]
            watched = list(self._watched.items())
        reads, asked = [], []
        for customer_id, entry in watched:
            snapshot = entry.snapshot
            if snapshot is None:
                continue  # the next check reads synchronously
            batch_ids = marker_batches(entry, customer_id)
            keys = [override_store.revision_key(customer_id)]
            keys += [counters.batch_marker_key(customer_id, batch_id) for batch_id in batch_ids]
            reads.append((customer_id, snapshot.segment_start, snapshot.unique_metrics, keys))
            asked.append((entry, snapshot, batch_ids))
        if not reads:
            return 0
        sent_at = time.monotonic()
        results = counters.read_many_segments_and(reads)
        with self._lock:
            for (entry, old, batch_ids), (live, values) in zip(asked, results, strict=True):
                if live is None:  # missing or gapped: the next check rebuilds it
                    entry.snapshot = None
                    continue
                seen = frozenset(b for b, value in zip(batch_ids, values[1:], strict=True) if value)
                fresh = CounterSnapshot(
                    old.segment_start,
                    old.unique_metrics,
                    live.version,
                    live.state,
                    live.unique_counts,
                    override_store.decode_revision(values[0]),
                    seen,
                    sent_at,
                )
                self._replace(entry, fresh)
        self.refreshes += 1
        return len(reads)

    @staticmethod
    def _replace(entry: _Watched, snapshot: CounterSnapshot) -> None:
        """Never go back: a check that saw a batch's marker in the current snapshot has told
        the recorder to stop counting it, so every later snapshot must hold its events."""
        current = entry.snapshot
        if (
            current is None
            or current.segment_start != snapshot.segment_start
            or snapshot.version >= current.version
        ):
            entry.snapshot = snapshot

    def forget(self, customer_id: str) -> None:
        """Read the customer synchronously on its next check (e.g. its overrides changed here)."""
        with self._lock:
            self._watched.pop(customer_id, None)

    def clear(self) -> None:
        with self._lock:
            self._watched.clear()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child that was not reset (no at-fork hook ran)
            self._reset()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="meterline-limit-snapshots", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # Redis away: snapshots go stale and checks read synchronously
                log.warning("refreshing the limit snapshots failed", exc_info=True)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None


_live: weakref.WeakSet[LimitSnapshots] = weakref.WeakSet()
_default: LimitSnapshots | None = None
_default_lock = threading.Lock()


def default_snapshots() -> LimitSnapshots | None:
    """This process's snapshots at `METER_LIMIT_REFRESH_MS` (None when it is 0: no snapshots;
    read on every call, so a changed setting counts once the settings are re-read)."""
    global _default
    from storage.settings import get_settings

    interval = get_settings().METER_LIMIT_REFRESH_MS / 1000
    if interval == 0:
        return None
    if _default is None or _default.interval != interval:
        with _default_lock:
            if _default is None or _default.interval != interval:
                if _default is not None:
                    _default.stop()
                _default = LimitSnapshots(interval)
    return _default


def clear_snapshots() -> None:
    """Forget every snapshot of this process (tests, after truncating; overrides changed)."""
    for snapshots in list(_live):
        snapshots.clear()


def refresh_snapshots() -> None:
    """Refresh every snapshot of this process now (what the thread does every interval)."""
    for snapshots in list(_live):
        snapshots.refresh()


def forget_snapshots(customer_id: str) -> None:
    """The customer's next check in this process reads synchronously (its overrides changed)."""
    for snapshots in list(_live):
        snapshots.forget(customer_id)


def _reset_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()  # another thread may have held it at the fork
    for snapshots in list(_live):
        snapshots._reset()


def _stop_at_exit() -> None:
    for snapshots in list(_live):
        snapshots.stop()


db.register_cache(clear_snapshots)
os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(_stop_at_exit)
