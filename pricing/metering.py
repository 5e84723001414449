"""Metering: which events a plan accepts, and what accepted events add to a customer's period.

The live path keeps, per customer × billing segment, a `SegmentState`: one `MetricState` per
metric and one `PercentageState` per percentage charge. Batches produce `SegmentDelta`s that are
merged into the PostgreSQL rollups and the Redis counters in any order with the same result as
pricing the raw events (`usage_from_events`), which is what makes live usage equal the invoice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pricing.aggregations import (
    LEVEL_AGGREGATIONS,
    MetricState,
    Sample,
    carry_over,
    metric_event_name,
)
from pricing.charges import PercentageCharge, PercentageState
from pricing.charges.base import ChargeResult, MetricUsage
from pricing.events import VALUE_PLACES, EventLike, event_value, matches_filter
from pricing.periods import Period, local_date
from pricing.plans import MetricDefinition, Plan

#: Aggregations whose events may carry a negative quantity (a level that goes down).
SIGNED_AGGREGATIONS = frozenset({"weighted_sum"})


@dataclass(frozen=True)
class Segment:
    """The part of a billing period that a customer spends under one plan."""

    plan: Plan
    plan_version: int
    period: Period
    start: datetime
    end: datetime
    timezone: str = "UTC"

    @property
    def weighting_period(self) -> Period:
        """The span a `weighted_sum` is averaged over: the whole billing period's length,
        ending when the segment ends (a plan change leaves each plan its own share)."""
        return Period(self.end - (self.period.end - self.period.start), self.end)


@dataclass(frozen=True)
class MetricReader:
    """One metric of a plan that reads a given event name, with what ingest needs to know."""

    key: str
    metric: MetricDefinition
    signed: bool  # may the event's quantity be negative?
    percentage: tuple[tuple[str, PercentageCharge], ...]  # (charge key, charge) on this metric


_indexes: dict[int, tuple[Plan, dict[str, tuple[MetricReader, ...]]]] = {}


def plan_index(plan: Plan) -> dict[str, tuple[MetricReader, ...]]:
    """Event name -> the plan's metrics that read it (computed once per plan object)."""
    cached = _indexes.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    index: dict[str, list[MetricReader]] = {}
    for key, metric in plan.metrics.items():
        charges = tuple(
            (_charge_key(key, i), charge)
            for i, charge in enumerate(plan.charges)
            if charge.metric == key and isinstance(charge, PercentageCharge)
        )
        signed = metric.field is not None or metric.aggregation in SIGNED_AGGREGATIONS
        index.setdefault(metric_event_name(key, metric), []).append(
            MetricReader(key, metric, signed, charges)
        )
    frozen = {name: tuple(found) for name, found in index.items()}
    if len(_indexes) > 1000:
        _indexes.clear()
    _indexes[id(plan)] = (plan, frozen)
    return frozen


def readers(plan: Plan, event_name: str) -> list[str]:
    """The plan's metrics that read events of this name."""
    return [reader.key for reader in plan_index(plan).get(event_name, ())]


def check_event(plan: Plan, event: EventLike) -> tuple[str, str] | None:
    """Why the plan cannot accept this event, as (reason code, message), or None."""
    found = plan_index(plan).get(event.metric)
    if not found:
        return "unknown_metric", f"metric: {event.metric!r} is not a metric of plan {plan.code!r}"
    for reader in found:
        metric = reader.metric
        if event.quantity < 0 and not reader.signed:
            return (
                "negative_quantity",
                f"quantity: must not be negative for metric {reader.key!r} ({metric.aggregation})",
            )
        if (
            metric.field is not None
            and event_value(metric, event) is None
            and matches_filter(metric, event)
        ):
            return (
                "invalid_value",
                f"properties.{metric.field}: missing, not a number or out of range"
                f" (|value| < 10^18, at most {VALUE_PLACES} decimal places)"
                f" for metric {reader.key!r}",
            )
    return None


def _charge_key(metric: str, index: int) -> str:
    return f"{metric}:{index}"


#: The state key of a plan's percentage charge (`check_limit` prices a request with it).
charge_key = _charge_key


@dataclass
class SegmentState:
    """What a customer × segment has accumulated: per metric, per percentage charge.

    Distinct values for `unique_count` are kept apart (a set in Redis, rows in PostgreSQL), so
    states here never carry them.
    """

    metrics: dict[str, MetricState] = field(default_factory=dict)
    charges: dict[str, tuple[PercentageCharge, PercentageState]] = field(default_factory=dict)

    def merge(self, other: SegmentState) -> SegmentState:
        metrics = dict(self.metrics)
        for key, state in other.metrics.items():
            metrics[key] = metrics[key].merge(state) if key in metrics else state
        charges = dict(self.charges)
        for key, (charge, charge_state) in other.charges.items():
            mine = charges.get(key)
            charges[key] = (charge, mine[1].merge(charge_state, charge) if mine else charge_state)
        return SegmentState(metrics, charges)

    @staticmethod
    def metric_json(state: MetricState) -> dict[str, Any]:
        return {k: v for k, v in state.to_dict().items() if k != "uniques"}

    @staticmethod
    def charge_json(charge: PercentageCharge, state: PercentageState) -> dict[str, Any]:
        return {"charge": charge.model_dump(mode="json"), "state": state.to_dict()}

    @staticmethod
    def charge_from_json(data: Mapping[str, Any]) -> tuple[PercentageCharge, PercentageState]:
        charge = PercentageCharge.model_validate(data["charge"])
        return charge, PercentageState.from_dict(data["state"])

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": {k: self.metric_json(v) for k, v in self.metrics.items()},
            "charges": {k: self.charge_json(*v) for k, v in self.charges.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SegmentState:
        return cls(
            {k: MetricState.from_dict(v) for k, v in data.get("metrics", {}).items()},
            {k: cls.charge_from_json(v) for k, v in data.get("charges", {}).items()},
        )


@dataclass
class SegmentDelta:
    """What one batch adds to one customer × segment."""

    customer_id: str
    start: datetime
    end: datetime
    state: SegmentState = field(default_factory=SegmentState)
    uniques: dict[str, list[str]] = field(default_factory=dict)
    days: dict[tuple[str, date], tuple[int, Decimal]] = field(default_factory=dict)


def build_deltas(accepted: Sequence[tuple[EventLike, Segment]]) -> list[SegmentDelta]:
    """Fold accepted events into one delta per customer × segment.

    Values are grouped per customer × segment × metric first and each group is summarized in
    one pass (`MetricState.from_values`): per-event work stays a few dictionary operations.
    """
    deltas: dict[tuple[str, datetime], SegmentDelta] = {}
    groups: dict[tuple[str, datetime], dict[str, list[Sample]]] = {}
    readers_of: dict[tuple[str, datetime], dict[str, MetricReader]] = {}
    days_cache: dict[tuple[str, datetime], date] = {}
    for event, segment in accepted:
        key = (event.customer_id, segment.start)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = SegmentDelta(event.customer_id, segment.start, segment.end)
            groups[key] = {}
            readers_of[key] = {}
        hour = event.timestamp.replace(minute=0, second=0, microsecond=0)
        day = days_cache.get((segment.timezone, hour))
        if day is None:
            day = days_cache[(segment.timezone, hour)] = local_date(hour, segment.timezone)
        for reader in plan_index(segment.plan).get(event.metric, ()):
            metric = reader.metric
            if (
                metric.filter is None
                and metric.field is None
                and metric.aggregation != "unique_count"
            ):
                value: Decimal | str = event.quantity
            else:
                found = event_value(metric, event)
                if found is None:
                    continue
                value = found
            groups[key].setdefault(reader.key, []).append((event.timestamp, event.event_id, value))
            readers_of[key][reader.key] = reader
            count, total = delta.days.get((reader.key, day), (0, Decimal(0)))
            amount = value if isinstance(value, Decimal) else Decimal(0)
            delta.days[(reader.key, day)] = (count + 1, total + amount)
    for key, per_metric in groups.items():
        delta = deltas[key]
        for name, values in per_metric.items():
            reader = readers_of[key][name]
            state = MetricState.from_values(reader.metric, values)
            if state.uniques:
                delta.uniques[name] = sorted(state.uniques)
                state.uniques = frozenset()
            delta.state.metrics[name] = state
            for charge_key, charge in reader.percentage:
                pstate = PercentageState()
                for ts, event_id, value in values:
                    if isinstance(value, Decimal):
                        pstate.add(charge, ts, event_id, value)
                delta.state.charges[charge_key] = (charge, pstate)
    return list(deltas.values())


def carried_levels(chain: Sequence[tuple[Segment, SegmentState]]) -> list[dict[str, MetricState]]:
    """What each segment of one billing period starts from, given every segment of it up to
    the last one wanted (oldest first) with its own state: per level-type metric (`weighted_sum`,
    `latest`, `max`), the level the segments before it left (`carry_over`).

    A metric carries from one segment to the next when both plans define it, by name, with the
    same aggregation. A plan without it, or with another aggregation, starts it at 0, and the
    chain is broken for the segments after it too. Nothing carries from one period to the next.
    Derived from the states alone, so a late event in an earlier segment moves the levels of
    the later ones the next time they are priced.
    """
    carried: list[dict[str, MetricState]] = []
    incoming: dict[str, MetricState] = {}
    previous: tuple[Segment, SegmentState] | None = None
    for segment, state in chain:
        if previous is not None:
            before, before_state = previous
            if before.period != segment.period:
                raise ValueError("carried_levels: segments of different billing periods")
            outgoing: dict[str, MetricState] = {}
            for key, metric in segment.plan.metrics.items():
                earlier = before.plan.metrics.get(key)
                if metric.aggregation not in LEVEL_AGGREGATIONS or earlier is None:
                    continue
                if earlier.aggregation != metric.aggregation:
                    continue
                ended = incoming.get(key, MetricState()).merge(
                    before_state.metrics.get(key, MetricState())
                )
                level = carry_over(metric, ended, segment.start)
                if level != MetricState():
                    outgoing[key] = level
            incoming = outgoing
        carried.append(incoming)
        previous = (segment, state)
    return carried


def metric_quantity(
    plan: Plan,
    key: str,
    state: SegmentState,
    unique_counts: Mapping[str, int],
    segment: Segment,
    carried: Mapping[str, MetricState] | None = None,
) -> Decimal:
    """One metric's aggregated quantity from a segment's state (what `segment_usage` gives
    for it), for callers that need a few metrics and no prices (alerts)."""
    metric = plan.metrics[key]
    if metric.aggregation == "unique_count":
        return Decimal(unique_counts.get(key, 0))
    metric_state = state.metrics.get(key, MetricState())
    if carried and key in carried:
        metric_state = carried[key].merge(metric_state)
    # Only a weighted sum reads the period (and building the weighting period costs).
    weighted = metric.aggregation == "weighted_sum"
    return metric_state.value(metric, segment.weighting_period if weighted else segment.period)


def segment_usage(
    plan: Plan,
    state: SegmentState,
    unique_counts: Mapping[str, int],
    segment: Segment,
    carried: Mapping[str, MetricState] | None = None,
) -> tuple[dict[str, MetricUsage], dict[int, ChargeResult]]:
    """Each metric's usage from a segment's state, and the results of its percentage charges
    (priced from their own states, since a percentage charge needs more than a total).
    `carried` holds the levels the segment starts from (`carried_levels`)."""
    usage: dict[str, MetricUsage] = {}
    for key in plan.metrics:
        usage[key] = MetricUsage(metric_quantity(plan, key, state, unique_counts, segment, carried))
    results: dict[int, ChargeResult] = {}
    for index, charge in enumerate(plan.charges):
        if not isinstance(charge, PercentageCharge):
            continue
        stored = state.charges.get(_charge_key(charge.metric, index))
        pstate = stored[1] if stored and stored[0] == charge else None
        if pstate is not None:
            results[index] = pstate.charge(charge)
        elif stored is None:
            results[index] = PercentageState().charge(charge)
    return usage, results
