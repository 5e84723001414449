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
is priced only for customers with spend alerts, or for the payload of an alert that fires (once
per customer and batch, amounts only: `services.alert_estimate`).
Rules known to have fired are remembered in the process (`_Fired`), so a segment whose
thresholds have all fired costs a dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing.aggregations import LEVEL_AGGREGATIONS
from pricing.alerts import AlertOverrides, Rule, RuleSet, reached, rules_for
from pricing.limits import NO_OVERRIDES as NO_LIMIT_OVERRIDES
from pricing.limits import LimitOverrides
from pricing.metering import Segment, SegmentState, metric_quantity
from services.alert_cache import AlertOverrideCache, FiredKeys, SegmentKey
from services.alert_estimate import Estimate, estimate
from services.alert_payload import new_alerts
from services.overrides import limits_for, overrides_of, overrides_of_many
from services.usage import carried_in, segments_counters
from storage import alerts as store
from storage import db
from storage.catalog.cache import CustomerContext, catalog
from storage.usage import rollups

log = logging.getLogger(f"meterline.{__name__}")


@dataclass(frozen=True)
class Fired:
    """An alert this call wrote (and announced in the outbox)."""

    alert_id: int
    customer_id: str
    topic: str
    rule: Rule
    period_start: datetime


_fired = FiredKeys()


_overrides = AlertOverrideCache()


def forget_overrides(customer_ids: Iterable[str]) -> None:
    """Drop these customers' cached overrides in this process (other processes: within the
    cache's ttl)."""
    _overrides.forget(customer_ids)


def _clear_caches() -> None:
    _fired.clear()
    _watches.clear()
    _overrides.clear()


db.register_cache(_clear_caches)

_plan_rules: dict[int, tuple[Any, RuleSet]] = {}


def customer_rules(
    segment: Segment,
    overrides: AlertOverrides,
    customer_id: str | None = None,
    own: LimitOverrides | None = None,
) -> RuleSet:
    """The rules of a customer on the segment's plan (cached per plan when not overridden):
    its thresholds, and `limit.reached` for each metric with a hard limit (the plan's, or the
    customer's own: `meter limits set`; `own` when the caller has read them)."""
    plan = segment.plan
    limits = hard_limits(segment, customer_id, own)
    if not overrides.empty or limits:
        return rules_for(plan, overrides, limits)
    cached = _plan_rules.get(id(plan))
    if cached is None or cached[0] is not plan:
        cached = (plan, rules_for(plan))
        _plan_rules[id(plan)] = cached
    return cached[1]


def hard_limits(
    segment: Segment, customer_id: str | None, own: LimitOverrides | None = None
) -> dict[str, Decimal]:
    """Each metric's hard limit (units per period) as `check_limit` applies it."""
    if own is None:
        own = overrides_of(customer_id) if customer_id is not None else NO_LIMIT_OVERRIDES
    found: dict[str, Decimal] = {}
    for metric in segment.plan.metrics:
        limit = limits_for(segment.plan, metric, own).hard_limit
        if limit is not None:
            found[metric] = limit
    return found


@dataclass(frozen=True)
class _Watch:
    """What a touched segment is checked against: cached per customer × segment start for as
    long as the customer's context and overrides are the same objects."""

    context: CustomerContext
    overrides: AlertOverrides
    segment: Segment
    rules: RuleSet
    period_key: SegmentKey  # (customer, period start): where fired alerts are counted
    # Whether the segment starts from levels carried over an earlier segment of its period.
    carries: bool
    start_text: str  # the segment's start, ISO 8601
    # The rules not known to have fired (as of how many keys were known), cached.
    cached: list[_Pending] = field(default_factory=list)

    def pending(self, known: set[tuple[Any, ...]]) -> _Pending:
        if self.cached and self.cached[0].known == len(known):
            return self.cached[0]
        rules = [rule for rule in self.rules.all if rule.key not in known]
        lowest: dict[str, Decimal] = {}
        for rule in rules:
            if rule.metric is not None and rule.level < lowest.get(rule.metric, rule.level + 1):
                lowest[rule.metric] = rule.level
        pending = _Pending(len(known), rules, lowest, any(r.kind == "spend" for r in rules))
        self.cached[:] = [pending]
        return pending


@dataclass(frozen=True)
class _Pending:
    known: int
    rules: list[Rule]
    lowest: dict[str, Decimal]  # per metric, the lowest level of its pending rules
    spend: bool


_watches: dict[SegmentKey, _Watch] = {}


def _cached_watch(
    key: SegmentKey, context: CustomerContext, overrides: AlertOverrides
) -> _Watch | None:
    cached = _watches.get(key)
    if cached is not None and cached.context is context and cached.overrides is overrides:
        return cached
    return None


def _watch(
    key: SegmentKey, context: CustomerContext, overrides: AlertOverrides, own: LimitOverrides
) -> _Watch | None:
    segment = catalog.segment(context, key[1])
    if segment is None or segment.start != key[1]:
        return None  # the history changed meanwhile: the next batch sees the new segments
    if len(_watches) >= _fired.limit:
        _watches.clear()
    rules = customer_rules(segment, overrides, context.customer_id, own)
    carries = segment.start > segment.period.start and any(
        metric.aggregation in LEVEL_AGGREGATIONS for metric in segment.plan.metrics.values()
    )
    period_key = (context.customer_id, segment.period.start)
    watch = _Watch(
        context, overrides, segment, rules, period_key, carries, segment.start.isoformat()
    )
    _watches[key] = watch
    return watch


def check_segments(
    touched: Iterable[tuple[str, datetime, datetime]], *, now: datetime
) -> list[Fired]:
    """Fire the alerts the touched (customer, segment start, end) have reached; return the
    ones this call wrote. Safe to call any number of times for the same segments."""
    found = _reached(_pending(touched))
    due = [
        (watch, priced or estimate(watch.context, watch.segment, live), rules)
        for watch, live, priced, rules in found
    ]  # priced once per customer, however many of its rules fire
    return _write(due, now) if due else []


_Live = tuple[int, SegmentState, dict[str, int]]
_Found = tuple[_Watch, _Live, Estimate | None, list[Rule]]


def _reached(watching: list[tuple[_Watch, _Pending]]) -> list[_Found]:
    """The watched segments with rules reached, with their counters (and their estimate when
    spend rules needed it)."""
    if not watching:
        return []
    # The segments to look at closer (those that may have reached a level, and every one
    # with spend rules), their counters read in one Redis round trip.
    closer = _maybe_reached([(w, p) for w, p in watching if not p.spend])
    closer += [(w, p) for w, p in watching if p.spend]
    lives = segments_counters([(w.period_key[0], w.segment) for w, _ in closer])
    found: list[_Found] = []
    for (watch, pending), live in zip(closer, lives, strict=True):
        if pending.spend:  # the estimated bill `meter usage` shows, amounts only
            priced = estimate(watch.context, watch.segment, live)
            reached_now = reached(_rules(pending.rules), priced.used, priced.estimated_total)
            if reached_now:
                found.append((watch, live, priced, reached_now))
            continue
        used = _used(watch, list(pending.lowest), live)
        reached_now = reached(_rules(pending.rules), used, None)
        if reached_now:
            found.append((watch, live, None, reached_now))
    return found


def _pending(touched: Iterable[tuple[str, datetime, datetime]]) -> list[tuple[_Watch, _Pending]]:
    """The touched segments with rules not known to have fired, and those rules."""
    keys = list(dict.fromkeys((customer_id, start) for customer_id, start, _ in touched))
    if not keys:
        return []
    contexts = catalog.customers({customer_id for customer_id, _ in keys})
    overrides = _overrides.get(contexts)
    known = [key for key in keys if key[0] in contexts]
    cached = [_cached_watch(key, contexts[key[0]], overrides[key[0]]) for key in known]
    # The segments seen first (or again after their customer was re-read): the customers'
    # limit overrides in one round trip, not one per customer.
    fresh = [key for key, watch in zip(known, cached, strict=True) if watch is None]
    own = overrides_of_many(list(dict.fromkeys(c for c, _ in fresh))) if fresh else {}
    watches: list[_Watch] = []
    for key, watch in zip(known, cached, strict=True):
        if watch is None:
            watch = _watch(key, contexts[key[0]], overrides[key[0]], own[key[0]])
        if watch is not None and not watch.rules.empty:
            watches.append(watch)
    unknown = [w.period_key for w in watches if _fired.known(w.period_key) is None]
    if unknown:  # first sight of these periods in this process: what has fired already
        for period_key, keys_fired in store.fired_keys(unknown).items():
            _fired.add(period_key, keys_fired)
    found: list[tuple[_Watch, _Pending]] = []
    for watch in watches:
        pending = watch.pending(_fired.known(watch.period_key) or _NONE)
        if pending.rules:
            found.append((watch, pending))
    return found


_NONE: set[tuple[Any, ...]] = set()


def _rules(pending: list[Rule]) -> RuleSet:
    return RuleSet(
        tuple(r for r in pending if r.kind == "usage"),
        tuple(r for r in pending if r.kind == "spend"),
        tuple(r for r in pending if r.kind == "limit"),
    )


#: Aggregations whose value the rollups' count, total or maximum is (`rollups.reaching`).
_PLAIN = frozenset({"sum", "count", "max"})


def _maybe_reached(
    watching: Sequence[tuple[_Watch, _Pending]],
) -> list[tuple[_Watch, _Pending]]:
    """The segments that may have reached a pending level: for sum, count and max metrics the
    committed rollups say so in one query for the whole batch (most segments are below every
    level and cost nothing more); other aggregations, and levels carried over a plan change,
    are always looked at."""
    found: list[tuple[_Watch, _Pending]] = []
    candidates: list[tuple[str, str, str, str, Decimal]] = []
    owners: list[int] = []
    for index, (watch, pending) in enumerate(watching):
        metrics = watch.segment.plan.metrics
        if watch.carries or any(metrics[m].aggregation not in _PLAIN for m in pending.lowest):
            found.append((watch, pending))
            continue
        for metric, level in pending.lowest.items():
            aggregation = metrics[metric].aggregation
            candidates.append((watch.period_key[0], watch.start_text, metric, aggregation, level))
            owners.append(index)
    hits = sorted({owners[i] for i in rollups.reaching(candidates)})
    return found + [watching[i] for i in hits]


def _used(
    watch: _Watch, names: list[str], live: tuple[int, SegmentState, dict[str, int]]
) -> dict[str, Decimal]:
    """The used quantity of these metrics exactly as `meter usage` computes it, from the
    segment's counters (`live`)."""
    customer_id, segment = watch.period_key[0], watch.segment
    _, state, unique_counts = live
    carried = carried_in(customer_id, watch.context, segment)
    return {
        name: metric_quantity(segment.plan, name, state, unique_counts, segment, carried)
        for name in names
    }


def _write(due: Sequence[tuple[_Watch, Estimate, list[Rule]]], now: datetime) -> list[Fired]:
    """Record the due alerts in one transaction, in a fixed order (customer, then each
    customer's rules in firing order), so concurrent writers of the same keys never deadlock."""
    ordered = sorted(due, key=lambda item: item[0].context.customer_id)
    new = [
        (rule, alert)
        for watch, priced, rules in ordered
        for rule, alert in zip(
            rules,
            new_alerts(watch.context.customer_id, watch.segment, priced, rules, now),
            strict=True,
        )
    ]
    with db.connection() as conn, conn.transaction():
        written = store.record(conn, [alert for _, alert in new])
    for watch, _, rules in ordered:  # written now, or by someone before
        _fired.add(watch.period_key, [rule.key for rule in rules])
    rule_of = {id(alert): rule for rule, alert in new}
    fired = [
        Fired(alert_id, a.customer_id, a.topic, rule_of[id(a)], a.period_start)
        for a, alert_id in written
    ]
    for item in fired:
        log.info("alert %s: %s %s", item.alert_id, item.customer_id, item.topic)
    return fired
