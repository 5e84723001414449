"""Usage events: limits with reasons that name the field, and the value a metric reads."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.decoding import decode_event
from pricing.events import (
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_STRING_LENGTH,
    MAX_QUANTITY,
    QUANTITY_PLACES,
    Event,
    EventError,
    check_properties,
    event_json,
    event_value,
    matches_filter,
    property_problem,
)
from pricing.fields import value_text
from pricing.plans import MetricDefinition

D = Decimal
TS = "2026-11-05T10:00:00+00:00"


BASE = {"event_id": "evt_1", "customer_id": "cus_42", "metric": "api_calls", "timestamp": TS}


def make(**changes: Any) -> Event:
    return decode_event({**BASE, **changes})


def reasons(**changes: Any) -> str:
    with pytest.raises(EventError) as caught:
        make(**changes)
    return str(caught.value)


def test_limits_are_module_constants() -> None:
    assert D(10) ** 18 == MAX_QUANTITY
    assert QUANTITY_PLACES == 6
    assert (MAX_PROPERTIES, MAX_PROPERTY_KEY_LENGTH, MAX_PROPERTY_STRING_LENGTH) == (50, 64, 512)


def test_a_valid_event() -> None:
    ev = make(quantity="12.5", properties={"region": "eu", "n": 3, "ok": True, "x": 1.5})
    assert ev.quantity == D("12.5")
    assert ev.timestamp == datetime(2026, 11, 5, 10, tzinfo=UTC)
    assert ev.properties == {"region": "eu", "n": 3, "ok": True, "x": 1.5}
    assert make().quantity == D(1)  # default


def test_float_quantity_goes_through_its_text() -> None:
    assert make(quantity=0.1).quantity == D("0.1")


def test_timestamps_are_stored_in_utc() -> None:
    ev = make(timestamp=datetime(2026, 11, 5, 19, tzinfo=timezone(timedelta(hours=9))))
    assert ev.timestamp == datetime(2026, 11, 5, 10, tzinfo=UTC)
    assert ev.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamp_is_refused() -> None:
    assert "timestamp: must include a UTC offset" in reasons(timestamp="2026-11-05T10:00:00")
    assert "timestamp: must include a UTC offset" in reasons(timestamp=datetime(2026, 11, 5))


def test_an_unreadable_or_out_of_range_timestamp_is_refused() -> None:
    assert "timestamp: not an RFC 3339 timestamp" in reasons(timestamp="yesterday")
    assert "timestamp: must be an RFC 3339 timestamp string" in reasons(timestamp=1764237600)
    assert "cannot be converted to UTC" in reasons(timestamp="9999-12-31T23:59:59-14:00")


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        ("NaN", "quantity: must be a finite number"),
        (float("nan"), "quantity: must be a finite number"),
        ("Infinity", "quantity: must be a finite number"),
        (float("-inf"), "quantity: must be a finite number"),
        ("1e18", "quantity: must be less than 10^18"),
        ("-1000000000000000000", "quantity: must be less than 10^18"),
        ("0.0000001", "quantity: at most 6 decimal places"),
        ("abc", "quantity: not a number: 'abc'"),
        (True, "quantity: must be a number, not a boolean"),
    ],
)
def test_bad_quantities(quantity: object, reason: str) -> None:
    assert reason in reasons(quantity=quantity)


def test_quantity_limits_are_inclusive_of_the_ledger_column() -> None:
    assert make(quantity="999999999999999999.999999").quantity == D("999999999999999999.999999")
    assert make(quantity="-5.000000").quantity == D(-5)  # corrections may be negative
    assert make(quantity="1.5000000").quantity == D("1.5")  # trailing zeros are not places


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ""}, "event_id: must be a string of 1 to 128 characters, got ''"),
        ({"event_id": "x" * 129}, "event_id: must be a string of 1 to 128 characters, got 'xx"),
        ({"customer_id": ""}, "customer_id: must be a string of 1 to 128 characters"),
        ({"customer_id": 42}, "customer_id: must be a string of 1 to 128 characters, got 42"),
        ({"metric": "m" * 129}, "metric: must be a string of 1 to 128 characters"),
        ({"metric": "api\x00calls"}, "metric: must not contain NUL"),
        ({"properties": {f"k{i}": i for i in range(51)}}, "properties: at most 50 keys, got 51"),
        ({"properties": {"k" * 65: 1}}, "properties: a key must be a string of 1 to 64"),
        ({"properties": {"note": "x" * 513}}, "properties.note: at most 512 characters"),
        ({"properties": {"x": float("nan")}}, "properties.x: must be a finite number"),
        ({"properties": {"x": float("inf")}}, "properties.x: must be a finite number"),
        ({"properties": {"x": {"nested": 1}}}, "properties.x: must be a string, number or"),
        ({"properties": {"x": None}}, "properties.x: must be a string, number or boolean"),
        ({"properties": ["a"]}, "properties: must be an object"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_bad_fields(changes: dict[str, Any], reason: str) -> None:
    assert reason in reasons(**changes)


def test_missing_fields() -> None:
    with pytest.raises(EventError) as caught:
        decode_event({"metric": "api_calls"})
    assert [path for path, _ in caught.value.errors] == ["event_id", "customer_id", "timestamp"]
    assert "customer_id: required" in str(caught.value)


def test_limits_at_the_edge_are_accepted() -> None:
    props: dict[str, Any] = {f"k{i}": "v" for i in range(49)}
    props["k" * 64] = "x" * 512
    assert len(make(event_id="e" * 128, properties=props).properties) == 50


def metric(**fields: Any) -> MetricDefinition:
    return MetricDefinition.model_validate(fields)


def test_event_value_reads_quantity_or_field() -> None:
    ev = make(quantity="3", properties={"amount": "12.50", "bytes": 10, "flag": True, "r": 0.1})
    assert event_value(metric(aggregation="sum"), ev) == D(3)
    assert event_value(metric(aggregation="sum", field="amount"), ev) == D("12.50")
    assert event_value(metric(aggregation="max", field="bytes"), ev) == D(10)
    assert event_value(metric(aggregation="sum", field="r"), ev) == D("0.1")
    assert event_value(metric(aggregation="sum", field="flag"), ev) is None  # not numeric
    assert event_value(metric(aggregation="sum", field="missing"), ev) is None


def test_event_value_of_unique_count_is_the_property_text() -> None:
    seats = metric(aggregation="unique_count", field="user_id")
    assert event_value(seats, make(properties={"user_id": "u1"})) == "u1"
    assert event_value(seats, make(properties={"user_id": 7})) == "7"
    assert event_value(seats, make(properties={"user_id": 7.0})) == "7"
    assert event_value(seats, make()) is None


def test_filter_keeps_events_whose_property_is_listed() -> None:
    eu = metric(aggregation="sum", filter={"region": ["eu", "uk"], "tier": [1, True]})
    assert eu.filter == {"region": ["eu", "uk"], "tier": ["1", "true"]}
    inside = make(properties={"region": "uk", "tier": 1})
    assert matches_filter(eu, inside)
    assert event_value(eu, inside) == D(1)
    assert matches_filter(eu, make(properties={"region": "eu", "tier": "1"}))
    assert matches_filter(eu, make(properties={"region": "eu", "tier": True}))
    assert not matches_filter(eu, make(properties={"region": "us", "tier": 1}))
    assert not matches_filter(eu, make(properties={"region": "eu"}))  # must exist
    assert event_value(eu, make(properties={"region": "us", "tier": 1})) is None


def test_a_producers_decimal_properties_are_sent_as_exact_text() -> None:
    properties = check_properties({"amount": D("12.50")})
    assert properties == {"amount": "12.50"}
    ev = make(properties=properties)
    assert event_value(metric(aggregation="sum", field="amount"), ev) == D("12.5")


def test_an_event_survives_a_json_round_trip() -> None:
    ev = make(quantity="1.50", properties={"a": "1.20", "b": 1.5, "c": True, "d": 2, "e": "x"})
    assert decode_event(json.loads(json.dumps(event_json(ev)))) == ev


# Keys and values of every kind, NUL, lone surrogates and huge numbers included.
_any_text = st.text(st.characters(exclude_categories=()), max_size=70)
_any_value = st.one_of(
    _any_text,
    st.text(max_size=600),
    st.integers(),
    st.just(10**512),
    st.just(-(10**512) + 1),
    st.floats(),
    st.decimals(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@given(key=_any_text | st.integers(), value=_any_value)
def test_a_property_without_a_problem_is_storable(key: object, value: object) -> None:
    """What `property_problem` lets through, PostgreSQL (text, jsonb) and Redis can hold."""
    if property_problem(key, value) is not None:
        return
    assert isinstance(key, str) and 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH
    key.encode("utf-8")
    assert "\x00" not in key
    assert isinstance(value, str | int | float | Decimal)
    text = value_text(value)
    text.encode("utf-8")
    assert "\x00" not in text and len(text) <= MAX_PROPERTY_STRING_LENGTH + 2  # sign, point
