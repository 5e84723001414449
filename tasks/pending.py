"""The recorder's account, for `check_limit`, of the usage it holds and has not seen ingested.

Per customer × event name: [events, quantity] recorded and not yet seen in the counters
(`sums`); per sent batch: when it was sent and its own sums, until the ingest's marker for it
is seen (`ingested`) or the window passes.

`record()` takes no lock for it: it appends (customer, metric, quantity) to `journal` (a
deque: one atomic append, ~0.1 µs instead of a lock and a dict update), before the event can
be sent. Every reader folds the journal into `sums` first, under `lock`: the batch's own
account (`sent`, in the sender thread) therefore always finds its events already counted.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any

from pricing.limits import Pending
from tasks.message import Buffered

Sums = dict[tuple[str, str], list[Any]]


class UnseenUsage:
    """What one recorder holds per customer × event name (see the module docstring)."""

    def __init__(self) -> None:
        self.sums: Sums = {}
        self.journal: deque[tuple[str, str, Any]] = deque()  # recorded, not yet in sums
        self.lock = threading.Lock()
        #: batch id -> (monotonic time sent, its sums); oldest first (dicts keep order).
        self.outstanding: dict[str, tuple[float, Sums]] = {}

    def _fold(self) -> None:
        """Move the journal into `sums` (the caller holds `lock`)."""
        journal, sums = self.journal, self.sums
        while True:
            try:
                customer_id, metric, quantity = journal.popleft()
            except IndexError:
                return
            counted = sums.get((customer_id, metric))
            if counted is None:
                sums[(customer_id, metric)] = [1, quantity]
            else:
                counted[0] += 1
                counted[1] += quantity

    def pending(self, key: tuple[str, str], *, expire_before: float | None = None) -> Pending:
        """The account of `key`; batches sent before `expire_before` (monotonic) are forgotten
        first, under the same lock."""
        with self.lock:
            self._fold()
            if expire_before is not None:
                self._expire(expire_before)
            sums = self.sums.get(key)
            if sums is None:
                return Pending()
            batches = tuple(
                (batch_id, part[0], Decimal(part[1]))
                for batch_id, (_, parts) in self.outstanding.items()
                if (part := parts.get(key)) is not None
            )
            return Pending(sums[0], Decimal(sums[1]), batches)

    def sent(
        self, batch_id: str, events: Sequence[Buffered], now: float, *, expire_before: float
    ) -> None:
        """A batch of recorded events is about to be enqueued; batches sent before
        `expire_before` are forgotten, under the same lock."""
        parts: Sums = {}
        for event in events:
            part = parts.get((event[1], event[2]))
            if part is None:
                parts[(event[1], event[2])] = [1, event[3]]
            else:
                part[0] += 1
                part[1] += event[3]
        with self.lock:
            self._fold()
            self._expire(expire_before)
            self.outstanding[batch_id] = (now, parts)

    def ingested(self, batch_ids: Collection[str]) -> None:
        with self.lock:
            self._fold()
            for batch_id in batch_ids:
                entry = self.outstanding.pop(batch_id, None)
                if entry is not None:
                    self._subtract(entry[1])

    def forget(self, key: tuple[str, str], quantity: Any) -> None:
        """A recorded event that could not be kept after all (its spool write failed)."""
        with self.lock:
            self._fold()
            self._subtract({key: [1, quantity]})

    def _expire(self, before: float) -> None:
        """Forget batches sent before `before` (monotonic) whose marker never came (the
        caller holds `lock`)."""
        old = []
        for batch_id, (sent_at, _) in self.outstanding.items():  # oldest first
            if sent_at >= before:
                break
            old.append(batch_id)
        for batch_id in old:
            self._subtract(self.outstanding.pop(batch_id)[1])

    def _subtract(self, parts: Sums) -> None:
        for key, (count, total) in parts.items():
            sums = self.sums.get(key)
            if sums is None:
                continue
            sums[0] -= count
            sums[1] -= total
            if sums[0] <= 0:
                del self.sums[key]
