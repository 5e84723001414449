"""The alert check's per-process caches: the rules known to have fired, and the customers'
alert overrides. Both only save reads; the unique key of an alert is what makes it fire once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pricing.alerts import NO_OVERRIDES, AlertOverrides
from storage import alerts as store

SegmentKey = tuple[str, datetime]


class FiredKeys:
    """Rule keys known to have fired, per customer × period start, for this process.

    Filled from what this process wrote, what a conflicting write proved, and (once per
    segment) the alerts already stored. Bounded: cleared when it grows past `limit` segments.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: dict[SegmentKey, set[tuple[Any, ...]]] = {}

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def known(self, key: SegmentKey) -> set[tuple[Any, ...]] | None:
        with self._lock:
            return self._keys.get(key)

    def add(self, key: SegmentKey, rule_keys: Iterable[tuple[Any, ...]]) -> None:
        with self._lock:
            if len(self._keys) >= self.limit and key not in self._keys:
                self._keys.clear()
            self._keys.setdefault(key, set()).update(rule_keys)


class AlertOverrideCache:
    """Customers' alert overrides, cached for `ttl` seconds (as the catalog caches plans): a
    `meter alerts set` reaches running workers within that time."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, AlertOverrides]] = {}

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def forget(self, ids: Iterable[str]) -> None:
        with self._lock:
            for customer_id in ids:
                self._cache.pop(customer_id, None)

    def get(self, ids: Iterable[str]) -> dict[str, AlertOverrides]:
        now = time.monotonic()
        found: dict[str, AlertOverrides] = {}
        missing: list[str] = []
        with self._lock:
            for customer_id in ids:
                cached = self._cache.get(customer_id)
                if cached and cached[0] > now:
                    found[customer_id] = cached[1]
                else:
                    missing.append(customer_id)
        if missing:
            loaded = store.read_overrides(missing)
            with self._lock:
                for customer_id in missing:
                    found[customer_id] = loaded.get(customer_id, NO_OVERRIDES)
                    self._cache[customer_id] = (now + self.ttl, found[customer_id])
        return found
