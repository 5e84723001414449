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

from pricing.aggregations import MetricState, metric_event_name
from pricing.charges import PercentageCharge, PercentageState
from pricing.charges.base import ChargeResult, MetricUsage
from pricing.events import EventError, EventLike, UsageEvent, event_value, parse_event
from pricing.periods import Period, local_date
from pricing.plans import Plan

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
class Rejection:
    """An event refused, with a reason code, a message naming the field, and what was sent."""

    reason: str
    detail: str
    payload: Any

    def _get(self, key: str) -> str | None:
        value = self.payload.get(key) if isinstance(self.payload, Mapping) else None
        return value[:128] if isinstance(value, str) else None

    @property
    def event_id(self) -> str | None:
        return self._get("event_id")

    @property
    def customer_id(self) -> str | None:
        return self._get("customer_id")

    @property
    def metric(self) -> str | None:
        return self._get("metric")


def decode_event(raw: object) -> UsageEvent | Rejection:
    """A raw event from a message, or the reason it cannot be one."""
    if not isinstance(raw, Mapping):
        return Rejection(
            "invalid_event", f"event: expected an object, got {type(raw).__name__}", raw
        )
    try:
        return parse_event(raw)
    except EventError as error:
        return Rejection("invalid_event", str(error), raw)


def readers(plan: Plan, event_name: str) -> list[str]:
    """The plan's metrics that read events of this name."""
    return [key for key, m in plan.metrics.items() if metric_event_name(key, m) == event_name]


def check_event(plan: Plan, event: EventLike) -> tuple[str, str] | None:
    """Why the plan cannot accept this event, as (reason code, message), or None."""
    keys = readers(plan, event.metric)
    if not keys:
        return "unknown_metric", f"metric: {event.metric!r} is not a metric of plan {plan.code!r}"
    for key in keys:
        metric = plan.metrics[key]
        if (
            metric.field is None
            and event.quantity < 0
            and metric.aggregation not in SIGNED_AGGREGATIONS
        ):
            return (
                "negative_quantity",
                f"quantity: must not be negative for metric {key!r} ({metric.aggregation})",
            )
        if metric.field is not None and event_value(metric, event) is None:
            from pricing.events import matches_filter

            if matches_filter(metric, event):
                return (
                    "invalid_value",
                    f"properties.{metric.field}: missing or not a number for metric {key!r}",
                )
    return None


def _charge_key(metric: str, index: int) -> str:
    return f"{metric}:{index}"


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
    """Fold accepted events into one delta per customer × segment."""
    deltas: dict[tuple[str, datetime], SegmentDelta] = {}
    uniques: dict[tuple[str, datetime], dict[str, set[str]]] = {}
    for event, segment in accepted:
        key = (event.customer_id, segment.start)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = SegmentDelta(event.customer_id, segment.start, segment.end)
        plan = segment.plan
        day = local_date(event.timestamp, segment.timezone)
        for name in readers(plan, event.metric):
            metric = plan.metrics[name]
            value = event_value(metric, event)
            if value is None:
                continue
            state = delta.state.metrics.setdefault(name, MetricState())
            state.add(metric, event)
            if isinstance(value, str):
                uniques.setdefault(key, {}).setdefault(name, set()).add(value)
                value = Decimal(0)
            count, total = delta.days.get((name, day), (0, Decimal(0)))
            delta.days[(name, day)] = (count + 1, total + value)
            for index, charge in enumerate(plan.charges):
                if charge.metric == name and isinstance(charge, PercentageCharge):
                    ckey = _charge_key(name, index)
                    _, pstate = delta.state.charges.setdefault(ckey, (charge, PercentageState()))
                    pstate.add(charge, event.timestamp, event.event_id, value)
    for key, per_metric in uniques.items():
        deltas[key].uniques = {name: sorted(values) for name, values in per_metric.items()}
    for delta in deltas.values():
        for state in delta.state.metrics.values():
            state.uniques = frozenset()
    return list(deltas.values())


def segment_usage(
    plan: Plan, state: SegmentState, unique_counts: Mapping[str, int], segment: Segment
) -> tuple[dict[str, MetricUsage], dict[int, ChargeResult]]:
    """Each metric's usage from a segment's state, and the results of its percentage charges
    (priced from their own states, since a percentage charge needs more than a total)."""
    usage: dict[str, MetricUsage] = {}
    for key, metric in plan.metrics.items():
        if metric.aggregation == "unique_count":
            quantity = Decimal(unique_counts.get(key, 0))
        else:
            metric_state = state.metrics.get(key, MetricState())
            quantity = metric_state.value(metric, segment.weighting_period)
        usage[key] = MetricUsage(quantity)
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
