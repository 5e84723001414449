"""Alerts: evaluated inline by ingest, for the segments a batch changed.

The ingest actor calls `check_segments` once per batch, after the batch's counters are applied
(or, for a redelivered batch, reloaded): the counters then hold at least what the batch
committed. For each segment it reads the counters of every touched segment in one Redis round
trip, computes each metric's used quantity the way `meter usage` does, and compares it with the
customer's rules (`pricing.alerts`). A rule that is reached and not known to have fired is
written with its outbox row in one transaction (`storage.alerts.record`); the unique key makes
it fire once per customer × metric × threshold × billing period, whichever worker, delivery or
redelivery gets there first. A worker killed after the ingest commit and before this write
leaves the batch unacknowledged: its redelivery evaluates the same segments again.

Cost when nothing is crossed: the counters' read and a comparison per rule; the estimated bill
is priced only for customers with spend alerts, or for the payload of an alert that fires.
Rules known to have fired are remembered in the process (`_Fired`), so a segment whose
thresholds have all fired costs a dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing.alerts import NO_OVERRIDES, AlertOverrides, Rule, RuleSet, reached, rules_for
from pricing.metering import Segment, segment_usage
from pricing.money import format_decimal, format_money
from services.usage import UsageReport, carried_in, segment_counters, segment_report
from storage import alerts as store
from storage import db
from storage.catalog.cache import CustomerContext, catalog
from storage.usage import counters

log = logging.getLogger(f"meterline.{__name__}")

SegmentKey = tuple[str, datetime]


@dataclass(frozen=True)
class Fired:
    """An alert this call wrote (and announced in the outbox)."""

    alert_id: int
    customer_id: str
    topic: str
    rule: Rule
    period_start: datetime


class _Fired:
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


_fired = _Fired()


class _Overrides:
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


_overrides = _Overrides()


def forget_overrides(customer_ids: Iterable[str]) -> None:
    """Drop these customers' cached overrides in this process (other processes: within the
    cache's ttl)."""
    _overrides.forget(customer_ids)


def _clear_caches() -> None:
    _fired.clear()
    _overrides.clear()


db.register_cache(_clear_caches)

_plan_rules: dict[int, tuple[Any, RuleSet]] = {}


def customer_rules(segment: Segment, overrides: AlertOverrides) -> RuleSet:
    """The rules of a customer on the segment's plan (cached per plan when not overridden)."""
    plan = segment.plan
    limits = hard_limits(segment, overrides)
    if not overrides.empty or limits:
        return rules_for(plan, overrides, limits)
    cached = _plan_rules.get(id(plan))
    if cached is None or cached[0] is not plan:
        cached = (plan, rules_for(plan))
        _plan_rules[id(plan)] = cached
    return cached[1]


def hard_limits(segment: Segment, overrides: AlertOverrides) -> dict[str, Decimal]:
    """The metrics' hard limits (units per period), for `limit.reached`: none until plans
    have `hard_limit`."""
    return {}


@dataclass
class _Candidate:
    context: CustomerContext
    segment: Segment
    rules: RuleSet


def check_segments(
    touched: Iterable[tuple[str, datetime, datetime]], *, now: datetime
) -> list[Fired]:
    """Fire the alerts the touched (customer, segment start, end) have reached; return the
    ones this call wrote. Safe to call any number of times for the same segments."""
    candidates = _candidates(touched)
    if not candidates:
        return []
    live = counters.read_segments(
        [(c.context.customer_id, c.segment.start, _unique_metrics(c.segment)) for c in candidates]
    )
    pending: list[tuple[_Candidate, UsageReport, list[Rule]]] = []
    for candidate, read in zip(candidates, live, strict=True):
        customer_id = candidate.context.customer_id
        snapshot = (
            (read.version, read.state, read.unique_counts)
            if read is not None
            else segment_counters(customer_id, candidate.segment)
        )
        report = None
        if candidate.rules.spend:
            report = segment_report(candidate.context, candidate.segment, now, snapshot)
            used = {name: m.used for name, m in report.metrics.items()}
            spend: Decimal | None = report.estimated_total
        else:
            used = _used(candidate, snapshot)
            spend = None
        due = _not_fired(customer_id, candidate.segment, reached(candidate.rules, used, spend))
        if due:
            report = report or segment_report(candidate.context, candidate.segment, now, snapshot)
            pending.append((candidate, report, due))
    return _write(pending, now) if pending else []


def _candidates(touched: Iterable[tuple[str, datetime, datetime]]) -> list[_Candidate]:
    """The touched segments whose customer has a rule that has not fired yet."""
    keys = list(dict.fromkeys((customer_id, start) for customer_id, start, _ in touched))
    if not keys:
        return []
    contexts = catalog.customers({customer_id for customer_id, _ in keys})
    overrides = _overrides.get(contexts)
    found: list[_Candidate] = []
    for customer_id, start in keys:
        context = contexts.get(customer_id)
        segment = catalog.segment(context, start) if context is not None else None
        if context is None or segment is None or segment.start != start:
            continue  # the history changed meanwhile: the next batch sees the new segments
        rules = customer_rules(segment, overrides.get(customer_id, NO_OVERRIDES))
        if rules.empty:
            continue
        known = _fired.known((customer_id, segment.period.start))
        if known is not None and all(rule.key() in known for rule in rules.all):
            continue
        found.append(_Candidate(context, segment, rules))
    return found


def _unique_metrics(segment: Segment) -> list[str]:
    return [k for k, m in segment.plan.metrics.items() if m.aggregation == "unique_count"]


def _used(candidate: _Candidate, snapshot: tuple[int, Any, dict[str, int]]) -> dict[str, Decimal]:
    """Each metric's used quantity, as `meter usage` computes it (no pricing)."""
    carried = carried_in(candidate.context.customer_id, candidate.context, candidate.segment)
    usage, _ = segment_usage(
        candidate.segment.plan, snapshot[1], snapshot[2], candidate.segment, carried
    )
    return {name: metric.quantity for name, metric in usage.items()}


def _not_fired(customer_id: str, segment: Segment, rules: list[Rule]) -> list[Rule]:
    """`rules` less those known to have fired this period (the stored alerts are read once per
    segment and process, when something looks due)."""
    key = (customer_id, segment.period.start)
    known = _fired.known(key)
    due = [rule for rule in rules if known is None or rule.key() not in known]
    if due and known is None:
        stored = store.fired_in(customer_id, segment.period.start)
        _fired.add(key, [(a.kind, a.metric, a.threshold, a.basis) for a in stored])
        known = _fired.known(key) or set()
        due = [rule for rule in due if rule.key() not in known]
    return due


def _write(
    pending: Sequence[tuple[_Candidate, UsageReport, list[Rule]]], now: datetime
) -> list[Fired]:
    """Record the due alerts in one transaction, in a fixed order (customer, then each
    customer's rules in firing order), so concurrent writers of the same keys never deadlock."""
    ordered = sorted(pending, key=lambda item: item[0].context.customer_id)
    new = [
        (rule, _new_alert(candidate, report, rule, now))
        for candidate, report, rules in ordered
        for rule in rules
    ]
    with db.connection() as conn, conn.transaction():
        written = store.record(conn, [alert for _, alert in new])
    for candidate, _, rules in ordered:
        key = (candidate.context.customer_id, candidate.segment.period.start)
        _fired.add(key, [rule.key() for rule in rules])  # written now, or by someone before
    rule_of = {id(alert): rule for rule, alert in new}
    fired = [
        Fired(alert_id, a.customer_id, a.topic, rule_of[id(a)], a.period_start)
        for a, alert_id in written
    ]
    for item in fired:
        log.info("alert %s: %s %s", item.alert_id, item.customer_id, item.topic)
    return fired


def idempotency_key(customer_id: str, rule: Rule, period_start: datetime) -> str:
    """Stable across redeliveries, workers and retries: the alert's unique key as text."""
    parts = [
        "alert",
        customer_id,
        rule.kind,
        rule.metric or "-",
        format_decimal(rule.threshold),
        format_decimal(rule.basis) if rule.basis is not None else "-",
        period_start.isoformat(),
    ]
    return ":".join(parts)


def _new_alert(
    candidate: _Candidate, report: UsageReport, rule: Rule, now: datetime
) -> store.NewAlert:
    segment = candidate.segment
    customer_id = candidate.context.customer_id
    currency = segment.plan.currency
    metric = report.metrics.get(rule.metric) if rule.metric else None
    value = metric.used if metric is not None else report.estimated_total
    payload: dict[str, Any] = {
        "idempotency_key": idempotency_key(customer_id, rule, segment.period.start),
        "type": rule.topic,
        "customer_id": customer_id,
        "plan": segment.plan.code,
        "metric": rule.metric,
        "kind": rule.kind,
        "threshold": format_decimal(rule.threshold),
        "threshold_label": rule.label(),
        "used": format_decimal(metric.used) if metric is not None else None,
        "included": format_decimal(metric.included) if metric is not None else None,
        "limit": format_decimal(rule.level) if rule.kind == "limit" else None,
        "period": {
            "start": segment.period.start.isoformat(),
            "end": segment.period.end.isoformat(),
            "label": segment.period.label,
        },
        "estimated_bill": format_money(report.estimated_total, currency),
        "currency": currency,
        "triggered_at": now.isoformat(),
    }
    return store.NewAlert(
        customer_id=customer_id,
        metric=rule.metric,
        kind=rule.kind,
        threshold=rule.threshold,
        basis=rule.basis,
        period_start=segment.period.start,
        period_end=segment.period.end,
        period_label=segment.period.label,
        plan_code=segment.plan.code,
        value=value,
        estimated_total=report.estimated_total,
        currency=currency,
        triggered_at=now,
        topic=rule.topic,
        payload=payload,
    )
