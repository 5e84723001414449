"""Aggregations over a period, with fields, filters and `event:` mapping, and MetricState."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pricing.aggregations import MetricState, aggregate, samples
from pricing.events import Event
from pricing.periods import Period
from pricing.plans import MetricDefinition

D = Decimal
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)  # 30 days
NOVEMBER = Period(START, END)


def ev(
    event_id: str,
    quantity: str = "1",
    *,
    at: timedelta = timedelta(0),
    metric: str = "api_calls",
    **properties: Any,
) -> Event:
    return Event(
        event_id=event_id,
        customer_id="cus_1",
        metric=metric,
        quantity=D(quantity),
        timestamp=START + at,
        properties=properties,
    )


def metric(**fields: Any) -> MetricDefinition:
    return MetricDefinition.model_validate(fields)


def agg(definition: MetricDefinition, events: list[Event], key: str = "api_calls") -> Decimal:
    result = aggregate(key, definition, events, NOVEMBER)
    state = MetricState.of(key, definition, events, NOVEMBER)
    assert state.value(definition, NOVEMBER) == result  # the state agrees on every example
    return result


EVENTS = [
    ev("e1", "10", at=timedelta(days=1), region="eu", user="u1", bytes=100),
    ev("e2", "5", at=timedelta(days=2), region="us", user="u2", bytes="250.5"),
    ev("e3", "7", at=timedelta(days=3), region="uk", user="u1", bytes=50),
    ev("e4", "2", at=timedelta(days=4), region="eu", user="u3"),
    ev("other", "1000", at=timedelta(days=1), metric="storage", region="eu"),
    ev("before", "1000", at=timedelta(seconds=-1), region="eu", user="u9"),
    ev("after", "1000", at=END - START, region="eu", user="u9"),
]


def test_sum() -> None:
    assert agg(metric(aggregation="sum"), EVENTS) == D(24)


def test_sum_with_field_skips_events_without_it() -> None:
    assert agg(metric(aggregation="sum", field="bytes"), EVENTS) == D("400.5")


def test_sum_with_filter() -> None:
    eu_uk = metric(aggregation="sum", filter={"region": ["eu", "uk"]})
    assert agg(eu_uk, EVENTS) == D(19)


def test_count() -> None:
    assert agg(metric(aggregation="count"), EVENTS) == D(4)
    assert agg(metric(aggregation="count", filter={"region": ["eu"]}), EVENTS) == D(2)


def test_max() -> None:
    assert agg(metric(aggregation="max"), EVENTS) == D(10)
    assert agg(metric(aggregation="max", field="bytes"), EVENTS) == D("250.5")
    assert agg(metric(aggregation="max", filter={"region": ["us"]}), EVENTS) == D(5)
    assert agg(metric(aggregation="max"), []) == D(0)


def test_unique_count() -> None:
    seats = metric(aggregation="unique_count", field="user")
    assert agg(seats, EVENTS) == D(3)
    eu_seats = metric(aggregation="unique_count", field="user", filter={"region": ["eu"]})
    assert agg(eu_seats, EVENTS) == D(2)


def test_latest() -> None:
    assert agg(metric(aggregation="latest"), EVENTS) == D(2)  # e4, the last in the period
    assert agg(metric(aggregation="latest", field="bytes"), EVENTS) == D(50)  # e3
    assert agg(metric(aggregation="latest"), []) == D(0)


def test_latest_tie_is_broken_by_the_greatest_event_id() -> None:
    tied = [
        ev("b", "5", at=timedelta(days=1)),
        ev("c", "9", at=timedelta(days=1)),
        ev("a", "7", at=timedelta(days=1)),
    ]
    assert agg(metric(aggregation="latest"), tied) == D(9)
    assert agg(metric(aggregation="latest"), list(reversed(tied))) == D(9)


def test_latest_is_never_below_zero() -> None:
    assert agg(metric(aggregation="latest"), [ev("a", "-3", at=timedelta(days=1))]) == D(0)


def test_event_mapping_derives_a_metric_from_another_stream() -> None:
    eu_calls = metric(aggregation="sum", event="api_calls", filter={"region": ["eu"]})
    assert agg(eu_calls, EVENTS, key="eu_calls") == D(12)
    # without `event:` the key itself is the event name: no "eu_calls" events exist
    assert agg(metric(aggregation="sum"), EVENTS, key="eu_calls") == D(0)
    assert agg(metric(aggregation="sum"), EVENTS, key="storage") == D(1000)


def test_weighted_sum_a_gb_kept_all_period_counts_one() -> None:
    gb_hours = metric(aggregation="weighted_sum")
    assert agg(gb_hours, [ev("a", "1")]) == D(1)


def test_weighted_sum_added_mid_period_counts_half() -> None:
    gb_hours = metric(aggregation="weighted_sum")
    assert agg(gb_hours, [ev("a", "1", at=timedelta(days=15))]) == D("0.5")
    # 2 GB held half the period, then deleted: 2 × 15/30 = 1
    held = [ev("a", "2"), ev("b", "-2", at=timedelta(days=15))]
    assert agg(gb_hours, held) == D(1)


def test_weighted_sum_is_exact_to_the_microsecond() -> None:
    gb_hours = metric(aggregation="weighted_sum")
    # 3 GB added 10 days in: level 3 for 20 of 30 days = 2
    assert agg(gb_hours, [ev("a", "3", at=timedelta(days=10))]) == D(2)
    # added one microsecond before the end: 1 µs of 2,592,000,000,000
    last = [ev("a", "2592000000000", at=END - START - timedelta(microseconds=1))]
    assert agg(gb_hours, last) == D(1)
    third = agg(gb_hours, [ev("a", "1", at=timedelta(days=10))])
    assert third == D("0.6666666666666666666666666667")


def test_weighted_sum_in_a_dst_month_uses_its_real_length() -> None:
    # March 2026 in New York is 743 hours; a GB added at the halfway instant counts 0.5.
    march = Period(datetime(2026, 3, 1, 5, tzinfo=UTC), datetime(2026, 4, 1, 4, tzinfo=UTC))
    half = march.start + (march.end - march.start) / 2
    gb = Event(event_id="a", customer_id="c", metric="gb", timestamp=half)
    assert aggregate("gb", metric(aggregation="weighted_sum"), [gb], march) == D("0.5")


def test_samples_are_in_time_order() -> None:
    found = samples("api_calls", metric(aggregation="sum"), list(reversed(EVENTS)), NOVEMBER)
    assert [event_id for _ts, event_id, _v in found] == ["e1", "e2", "e3", "e4"]


def test_metric_state_round_trips_through_json() -> None:
    definition = metric(aggregation="latest")
    state = MetricState.of("api_calls", definition, EVENTS, NOVEMBER)
    seats = MetricState.of(
        "api_calls", metric(aggregation="unique_count", field="user"), EVENTS, NOVEMBER
    )
    for original in (state, seats, MetricState.empty()):
        data = json.loads(json.dumps(original.to_dict()))
        assert MetricState.from_dict(data) == original


def test_metric_state_merge_and_with_event() -> None:
    definition = metric(aggregation="sum")
    empty = MetricState.empty()
    one = empty.with_event(definition, EVENTS[0])
    assert empty == MetricState()  # with_event is pure
    two = MetricState.empty().with_event(definition, EVENTS[1])
    assert one.merge(two).value(definition, NOVEMBER) == D(15)
    assert one.merge(two) == two.merge(one)
    assert one.merge(empty) == one


@pytest.mark.parametrize("aggregation", ["sum", "count", "max", "latest", "weighted_sum"])
def test_state_of_filtered_out_events_is_empty(aggregation: str) -> None:
    definition = metric(aggregation=aggregation, filter={"region": ["nowhere"]})
    state = MetricState.of("api_calls", definition, EVENTS, NOVEMBER)
    assert state == MetricState.empty()
    assert state.value(definition, NOVEMBER) == D(0)
