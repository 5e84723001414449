"""Where a batch's time goes between `record_usage` and the counters, for `bench_ingest`.

Each batch's life, from what the run leaves behind plus a log of the recorder's sends:
formation (its first event recorded → the sender thread takes it), send (encode + enqueue),
queue (enqueued → a worker thread starts it: the Redis queue, Dramatiq's prefetch and the wait
for a free thread), processing (started → counters applied: decode, the PostgreSQL
transaction, the counters, the markers). And how many batches were queued and in processing at
once, on average and at most.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench import common


@dataclass(frozen=True)
class BatchLife:
    events: int
    first_event: float  # epoch seconds
    send_start: float
    send_end: float
    started: float  # the worker's received_at (the actor's start)
    applied: float  # counters_applied_at


class SendLog:
    """When each batch of a recorder left its sender thread: {batch_id: (start, end)}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sends: dict[str, tuple[float, float]] = {}

    def clear(self) -> None:
        with self._lock:
            self.sends.clear()

    @contextmanager
    def watching(self, recorder: Any) -> Iterator[SendLog]:
        """Log the sends of `recorder` (a `UsageRecorder`) while in the block."""
        sender = recorder._sender
        original: Callable[..., str] = sender.send

        def send(*args: Any, **kwargs: Any) -> str:
            start = time.time()
            batch_id = original(*args, **kwargs)
            with self._lock:
                self.sends[batch_id] = (start, time.time())
            return batch_id

        sender.send = send
        try:
            yield self
        finally:
            del sender.send  # back to the class's method


def batch_lives(sends: dict[str, tuple[float, float]]) -> list[BatchLife]:
    """The life of every batch in the ledger that the log saw sent."""
    from storage import db

    with db.connection() as conn:
        rows = conn.execute(
            "SELECT b.batch_id, count(*), extract(epoch FROM min(e.timestamp)),"
            " extract(epoch FROM b.received_at), extract(epoch FROM b.counters_applied_at)"
            " FROM usage_events e JOIN ingest_batches b USING (batch_id)"
            " WHERE b.counters_applied_at IS NOT NULL"
            " GROUP BY b.batch_id, b.received_at, b.counters_applied_at"
        ).fetchall()
    lives = []
    for batch_id, events, first, started, applied in rows:
        if batch_id in sends:
            start, end = sends[batch_id]
            lives.append(
                BatchLife(int(events), float(first), start, end, float(started), float(applied))
            )
    return lives


def _overlap(spans: Sequence[tuple[float, float]]) -> tuple[float, int]:
    """Mean and peak number of spans open at once, over the time they cover."""
    if not spans:
        return 0.0, 0
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    busy = sum(e - s for s, e in spans)
    return (busy / wall if wall > 0 else 0.0), peak


def timeline_lines(lives: Sequence[BatchLife]) -> list[str]:
    """The summary `bench_ingest` prints: per stage p50 / p99 / mean in ms, and concurrency."""
    if not lives:
        return ["batch timeline: no batch seen (the send log missed them)"]
    stages: dict[str, list[float]] = {
        "formation (first event → sender takes it)": [b.send_start - b.first_event for b in lives],
        "send (encode + enqueue)": [b.send_end - b.send_start for b in lives],
        "queue (enqueued → a worker thread starts it)": [b.started - b.send_end for b in lives],
        "processing (started → counters applied)": [b.applied - b.started for b in lives],
    }
    sizes = sorted(b.events for b in lives)
    lines = [
        f"batch timeline: {len(lives):,} batches, events per batch p50 "
        f"{common.percentile(sizes, 0.5):,}, min {sizes[0]:,}, max {sizes[-1]:,}"
    ]
    for label, values in stages.items():
        summary = common.latency_summary(values)
        lines.append(
            f"  {label:46} p50 {summary['p50']:8,.0f} ms  p99 {summary['p99']:8,.0f} ms  "
            f"mean {summary['mean']:8,.0f} ms"
        )
    queued = _overlap([(b.send_end, b.started) for b in lives])
    working = _overlap([(b.started, b.applied) for b in lives])
    lines.append(
        f"  batches waiting in the queue at once: mean {queued[0]:.1f}, max {queued[1]}; "
        f"in processing at once: mean {working[0]:.1f}, max {working[1]}"
    )
    return lines
