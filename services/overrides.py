"""A customer's limits: the plan's fields with the customer's overrides on top, cached.

`limits_of(customer_id, metric)` is what the alert rules and `check_limit` use. Overrides are
cached per process and re-read when the customer's revision key in Redis changes (`meter
limits set` writes it), or after `OVERRIDES_TTL` seconds if Redis lost the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pricing.errors import UserError, echo
from pricing.limits import NO_OVERRIDES, EffectiveLimits, LimitOverrides, effective_limits
from pricing.metering import Segment
from pricing.money import format_money
from pricing.plans import Plan, included_usage
from services.limit_snapshot import forget_snapshots
from storage import db
from storage.catalog import limits as store
from storage.catalog.cache import catalog
from storage.errors import NotFound

OVERRIDES_TTL = 60.0  # seconds; a backstop only: the revision key invalidates at once


class OverrideCache:
    """Each customer's overrides with the revision they were read at."""

    def __init__(self, ttl: float = OVERRIDES_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float, LimitOverrides]] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, customer_id: str, revision: str) -> LimitOverrides | None:
        """The cached overrides if they are still at `revision` (None: read them again)."""
        entry = self._entries.get(customer_id)
        if entry is None or entry[0] != revision or entry[1] < time.monotonic():
            return None
        return entry[2]

    def load(self, customer_id: str, revision: str) -> LimitOverrides:
        overrides = store.read_overrides(customer_id)
        with self._lock:
            self._entries[customer_id] = (revision, time.monotonic() + self.ttl, overrides)
        return overrides

    def current(self, customer_id: str, revision: str) -> LimitOverrides:
        return self.get(customer_id, revision) or self.load(customer_id, revision)

    def current_of(self, revisions: dict[str, str]) -> dict[str, LimitOverrides]:
        """`current` for many customers: the ones not cached at their revision are read in
        one round trip."""
        found: dict[str, LimitOverrides] = {}
        missing: list[str] = []
        for customer_id, revision in revisions.items():
            cached = self.get(customer_id, revision)
            if cached is None:
                missing.append(customer_id)
            else:
                found[customer_id] = cached
        if missing:
            loaded = store.read_overrides_of(missing)
            expires = time.monotonic() + self.ttl
            with self._lock:
                for customer_id in missing:
                    found[customer_id] = loaded.get(customer_id, NO_OVERRIDES)
                    self._entries[customer_id] = (
                        revisions[customer_id],
                        expires,
                        found[customer_id],
                    )
        return found


override_cache = OverrideCache()
db.register_cache(override_cache.clear)


def overrides_of(customer_id: str) -> LimitOverrides:
    """The customer's overrides, checked against the revision key (one Redis GET)."""
    revision = store.read_revision(customer_id)
    return override_cache.current(customer_id, revision)


def overrides_of_many(customer_ids: Sequence[str]) -> dict[str, LimitOverrides]:
    """`overrides_of` for many customers: one Redis round trip for their revisions, and one
    PostgreSQL query for those whose overrides are not cached at that revision."""
    return override_cache.current_of(store.read_revisions(customer_ids))


def limits_for(plan: Plan, metric: str, overrides: LimitOverrides) -> EffectiveLimits:
    """The limits of `metric` under `plan` with `overrides` on top."""
    return effective_limits(
        metric, included_usage(plan, metric), plan.limits, plan.spend_cap, overrides
    )


def current_segment(customer_id: str, at: datetime) -> Segment:
    """The customer's segment at `at` (NotFound for an unknown customer or no plan then)."""
    context = catalog.customers({customer_id}).get(customer_id)
    if context is None:
        raise NotFound(f"customer_id: no customer {echo(customer_id)}")
    segment = catalog.segment(context, at)
    if segment is None:
        raise NotFound(f"customer {customer_id!r} has no plan at {at.isoformat()}")
    return segment


def limits_of(customer_id: str, metric: str, at: datetime | None = None) -> EffectiveLimits:
    """The limits that apply to a customer × metric at `at` (default now): NotFound for an
    unknown customer or a metric its plan does not have."""
    segment = current_segment(customer_id, at or datetime.now(UTC))
    if metric not in segment.plan.metrics:
        raise NotFound(f"metric: {metric!r} is not a metric of plan {segment.plan.code!r}")
    return limits_for(segment.plan, metric, overrides_of(customer_id))


def set_overrides(customer_id: str, change: store.OverrideChange) -> LimitOverrides:
    """Apply a change to a customer's overrides and return them as they now are. The metric
    must be one of the customer's current plan."""
    if change.metric is not None:
        plan = current_segment(customer_id, datetime.now(UTC)).plan
        if change.metric not in plan.metrics:
            known = ", ".join(sorted(plan.metrics)) or "none"
            raise UserError(
                "--metric",
                f"{echo(change.metric)} is not a metric of plan {plan.code!r} (known: {known})",
            )
    elif change.hard_limit is not None or change.throttle_at is not None:
        raise UserError("--metric", "required with --hard-limit or --throttle-at")
    else:
        current_segment(customer_id, datetime.now(UTC))  # the customer exists
    for name, value in (("--hard-limit", change.hard_limit), ("--spend-cap", change.spend_cap)):
        if value is not None and value < 0:
            raise UserError(name, "must not be negative")
    if change.throttle_at is not None and change.throttle_at <= Decimal(0):
        raise UserError("--throttle-at", "must be greater than 0 (a share of the included usage)")
    store.apply_change(customer_id, change)
    override_cache.clear()
    forget_snapshots(customer_id)  # this process's checks see the change at once
    return store.read_overrides(customer_id)


def limits_table(customer_id: str, at: datetime | None = None) -> dict[str, Any]:
    """Every metric's limits in force for the customer, with which ones it overrides (what
    `meter limits show` prints)."""
    segment = current_segment(customer_id, at or datetime.now(UTC))
    plan = segment.plan
    overrides = store.read_overrides(customer_id)
    metrics: dict[str, Any] = {}
    for name in plan.metrics:
        document = limits_for(plan, name, overrides).to_json(plan.currency)
        own = overrides.metrics.get(name)
        document["overridden"] = [
            field
            for field in ("hard_limit", "throttle_at")
            if own and getattr(own, field) is not None
        ]
        metrics[name] = document
    cap = effective_limits("", Decimal(0), {}, plan.spend_cap, overrides).spend_cap
    return {
        "customer_id": customer_id,
        "plan": plan.code,
        "currency": plan.currency,
        "metrics": metrics,
        "spend_cap": None if cap is None else format_money(cap, plan.currency),
        "spend_cap_overridden": overrides.spend_cap is not None,
    }
