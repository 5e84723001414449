"""Metric aggregations over a period: one function per aggregation, and a mergeable state.

`aggregate` is the reference: it reads the events themselves. `MetricState` is the exact
summary the live path keeps instead (Redis counters, PostgreSQL rollups): states built from
any split of the events, merged in any order, give exactly what `aggregate` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from pricing.events import EventLike, event_value
from pricing.money import exact_arithmetic, format_decimal
from pricing.periods import Period
from pricing.plans import MetricDefinition

#: One event's contribution: (timestamp, event_id, value); text only for unique_count.
Sample = tuple[datetime, str, Decimal | str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Digits of a weighted_sum (the one aggregation that divides), fixed so that the result does
#: not depend on the caller's decimal context.
WEIGHTED_PRECISION = 28
#: Aggregations of a level (a gauge) rather than of a flow. A level is a fact about the
#: customer, not about its plan: within a billing period it carries from one segment to the
#: next across a plan change (`carry_over`), where a flow starts afresh with each plan.
LEVEL_AGGREGATIONS = frozenset({"weighted_sum", "latest", "max"})


def metric_event_name(key: str, metric: MetricDefinition) -> str:
    """The event name a metric reads: its `event`, or else its own key."""
    return metric.event or key


def samples(
    key: str, metric: MetricDefinition, events: Iterable[EventLike], period: Period
) -> list[Sample]:
    """The values the events give metric `key` in `period`, in time order (then event_id)."""
    name = metric_event_name(key, metric)
    found: list[Sample] = []
    for event in events:
        if event.metric != name or not period.contains(event.timestamp):
            continue
        value = event_value(metric, event)
        if value is not None:
            found.append((event.timestamp, event.event_id, value))
    found.sort(key=lambda sample: (sample[0], sample[1]))
    return found


def aggregate(
    key: str, metric: MetricDefinition, events: Iterable[EventLike], period: Period
) -> Decimal:
    """The aggregated quantity of metric `key` over `period`."""
    return AGGREGATIONS[metric.aggregation](samples(key, metric, events, period), period)


def _number(value: Decimal | str) -> Decimal:
    if isinstance(value, str):
        raise TypeError("a numeric aggregation got a text value")
    return value


def sum_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Σ value."""
    with exact_arithmetic():
        return sum((_number(value) for _ts, _id, value in values), start=Decimal(0))


def count_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Number of events that passed the filter."""
    return Decimal(len(values))


def max_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Peak value; 0 when there is none."""
    return max((_number(value) for _ts, _id, value in values), default=Decimal(0))


def unique_count_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Number of distinct values of the field."""
    return Decimal(len({value for _ts, _id, value in values}))


def latest_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Value of the latest event (greatest timestamp, then event_id), never below 0."""
    if not values:
        return Decimal(0)
    _ts, _id, value = max(values, key=lambda sample: (sample[0], sample[1]))
    return max(_number(value), Decimal(0))


def weighted_sum_of(values: Sequence[Sample], period: Period) -> Decimal:
    """Σ level × time held ÷ period length, the level starting at 0 at the period start.

    Equal to Σ value × (end − t) ÷ (end − start), computed exactly in integer microseconds.
    """
    end = _micros(period.end)
    with exact_arithmetic():
        numerator = sum(
            (_number(value) * (end - _micros(ts)) for ts, _id, value in values), start=Decimal(0)
        )
    return _per_period(numerator, period)


AGGREGATIONS: Mapping[str, Callable[[Sequence[Sample], Period], Decimal]] = {
    "sum": sum_of,
    "count": count_of,
    "max": max_of,
    "unique_count": unique_count_of,
    "latest": latest_of,
    "weighted_sum": weighted_sum_of,
}


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND


def _per_period(numerator: Decimal, period: Period) -> Decimal:
    with localcontext() as context:
        context.prec = WEIGHTED_PRECISION
        return numerator / (_micros(period.end) - _micros(period.start))


@dataclass
class MetricState:
    """An exact, mergeable summary of one metric's events in one period.

    Every aggregation is computed from it (`value`), so the live path can keep a state per
    customer × metric × period, fold in deltas and merge them in any order. The caller routes
    events: only those named `metric_event_name(key, metric)` and inside the period.
    """

    count: int = 0
    total: Decimal = Decimal(0)
    maximum: Decimal | None = None
    latest_at: datetime | None = None
    latest_event_id: str | None = None
    latest_value: Decimal | None = None
    weighted_v: Decimal = Decimal(0)  # Σ v (kept for weighted_sum metrics only)
    weighted_vt: Decimal = Decimal(0)  # Σ v × t, t in epoch microseconds (idem)
    uniques: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def empty(cls) -> MetricState:
        return cls()

    @classmethod
    def of(
        cls, key: str, metric: MetricDefinition, events: Iterable[EventLike], period: Period
    ) -> MetricState:
        """The state of the metric's events in `period` (routing done here)."""
        state = cls()
        name = metric_event_name(key, metric)
        for event in events:
            if event.metric == name and period.contains(event.timestamp):
                state.add(metric, event)
        return state

    def add(self, metric: MetricDefinition, event: EventLike) -> None:
        """Fold in one event (ignored when the metric's filter or field leaves it out)."""
        value = event_value(metric, event)
        if value is None:
            return
        self.count += 1
        if isinstance(value, str):
            self.uniques = self.uniques | {value}
            return
        with exact_arithmetic():
            self.total += value
            if metric.aggregation == "weighted_sum":
                self.weighted_v += value
                self.weighted_vt += value * _micros(event.timestamp)
        self.maximum = value if self.maximum is None else max(self.maximum, value)
        if self.latest_at is None or self._is_later(event.timestamp, event.event_id):
            self.latest_at, self.latest_event_id = event.timestamp, event.event_id
            self.latest_value = value

    @classmethod
    def from_values(cls, metric: MetricDefinition, values: Sequence[Sample]) -> MetricState:
        """The state of a metric's values (as `samples` gives them, in any order) in one pass:
        what `add` gives event by event, for the ingest hot path."""
        state = cls()
        if not values:
            return state
        state.count = len(values)
        if metric.aggregation == "unique_count":
            state.uniques = frozenset(str(value) for _ts, _id, value in values)
            return state
        numbers = [value for _ts, _id, value in values if isinstance(value, Decimal)]
        with exact_arithmetic():
            state.total = sum(numbers, Decimal(0))
            if metric.aggregation == "weighted_sum":
                state.weighted_v = state.total
                state.weighted_vt = sum(
                    (v * _micros(ts) for ts, _id, v in values if isinstance(v, Decimal)),
                    Decimal(0),
                )
        state.maximum = max(numbers)
        ts, event_id, latest = max(values, key=lambda sample: (sample[0], sample[1]))
        state.latest_at, state.latest_event_id = ts, event_id
        state.latest_value = latest if isinstance(latest, Decimal) else None
        return state

    def with_event(self, metric: MetricDefinition, event: EventLike) -> MetricState:
        """A copy with one more event (the pure form of `add`)."""
        state = replace(self)
        state.add(metric, event)
        return state

    def merge(self, other: MetricState) -> MetricState:
        """The state of both parts together (commutative and associative)."""
        with exact_arithmetic():
            merged = MetricState(
                count=self.count + other.count,
                total=self.total + other.total,
                maximum=_max_or_none(self.maximum, other.maximum),
                weighted_v=self.weighted_v + other.weighted_v,
                weighted_vt=self.weighted_vt + other.weighted_vt,
                uniques=self.uniques | other.uniques,
            )
        dated = [state for state in (self, other) if state.latest_at is not None]
        if dated:
            later = max(dated, key=_latest_key)
            merged.latest_at = later.latest_at
            merged.latest_event_id = later.latest_event_id
            merged.latest_value = later.latest_value
        return merged

    def value(self, metric: MetricDefinition, period: Period) -> Decimal:
        """The aggregated quantity, equal to `aggregate` over the same events."""
        match metric.aggregation:
            case "sum":
                return self.total
            case "count":
                return Decimal(self.count)
            case "max":
                return Decimal(0) if self.maximum is None else self.maximum
            case "unique_count":
                return Decimal(len(self.uniques))
            case "latest":
                latest = self.latest_value
                return Decimal(0) if latest is None else max(latest, Decimal(0))
            case "weighted_sum":
                with exact_arithmetic():
                    numerator = self.weighted_v * _micros(period.end) - self.weighted_vt
                return _per_period(numerator, period)
        raise ValueError(f"unknown aggregation {metric.aggregation!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: decimals as strings, the timestamp in ISO 8601, uniques sorted."""
        return {
            "count": self.count,
            "total": format_decimal(self.total),
            "maximum": None if self.maximum is None else format_decimal(self.maximum),
            "latest_at": None if self.latest_at is None else self.latest_at.isoformat(),
            "latest_event_id": self.latest_event_id,
            "latest_value": None
            if self.latest_value is None
            else format_decimal(self.latest_value),
            "weighted_v": format_decimal(self.weighted_v),
            "weighted_vt": format_decimal(self.weighted_vt),
            "uniques": sorted(self.uniques),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricState:
        def decimal_or_none(value: object) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        latest_at = data.get("latest_at")
        return cls(
            count=int(data["count"]),
            total=Decimal(str(data["total"])),
            maximum=decimal_or_none(data.get("maximum")),
            latest_at=None if latest_at is None else datetime.fromisoformat(latest_at),
            latest_event_id=data.get("latest_event_id"),
            latest_value=decimal_or_none(data.get("latest_value")),
            weighted_v=Decimal(str(data["weighted_v"])),
            weighted_vt=Decimal(str(data["weighted_vt"])),
            uniques=frozenset(data.get("uniques", ())),
        )

    def _is_later(self, timestamp: datetime, event_id: str) -> bool:
        return (timestamp, event_id) > _latest_key(self)


def carry_over(metric: MetricDefinition, ended: MetricState, start: datetime) -> MetricState:
    """The level a segment leaves to the next segment of its period, which begins at `start`,
    as the state that segment starts from. `ended` is the earlier segment's whole state: its
    own events merged with what it carried in itself.

    - `weighted_sum`: the running level (Σ values so far), held from `start` on, exactly as
      if one event of that value arrived at `start`.
    - `latest` and `max`: the last reading before `start`. `latest` keeps it until a new
      reading comes; `max` is the peak of the level, which at `start` is that reading, so a
      peak reached earlier under the other plan is not carried, only the level it left.

    Empty for any other aggregation, and when there is no level to carry.
    """
    match metric.aggregation:
        case "weighted_sum":
            if not ended.weighted_v:
                return MetricState()
            with exact_arithmetic():
                return MetricState(
                    weighted_v=ended.weighted_v, weighted_vt=ended.weighted_v * _micros(start)
                )
        case "latest" | "max" if ended.latest_at is not None:
            return MetricState(
                maximum=ended.latest_value,
                latest_at=ended.latest_at,
                latest_event_id=ended.latest_event_id,
                latest_value=ended.latest_value,
            )
    return MetricState()


def _latest_key(state: MetricState) -> tuple[datetime, str]:
    """Which event is the latest: the greatest timestamp, ties broken by the greatest id."""
    assert state.latest_at is not None and state.latest_event_id is not None  # noqa: S101 (invariant for mypy, not validation)
    return state.latest_at, state.latest_event_id


def _max_or_none(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
