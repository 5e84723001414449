"""The ingest fast path decodes exactly what the `UsageEvent` model accepts, and leaves
everything else to it (so every rejection still gets the model's message)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.events import EventError, parse_event
from pricing.metering import Event, Rejection, _fast_event, decode_event

texts = st.text(st.characters(exclude_categories=()), min_size=0, max_size=140)  # NUL, surrogates
quantities = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**19), max_value=10**19),
    st.sampled_from(["1", "0.000001", "0.0000001", "1.500000000", "1e3", "-2", "abc", ""]),
    st.sampled_from(["1e999999999", "-1e999999999", "1e-999999999", "0e999999999", "1e17"]),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27", "not a time", ""]),
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]),
    st.integers(),
)
property_values = st.one_of(
    st.text(max_size=600),
    texts,
    st.integers(),
    st.just(10**600),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
properties = st.one_of(
    st.dictionaries(st.text(max_size=70) | texts, property_values, max_size=55),
    st.none(),
    st.integers(),
)


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key, strategy in [
        ("event_id", texts),
        ("customer_id", texts),
        ("metric", texts),
        ("quantity", quantities),
        ("timestamp", timestamps),
        ("properties", properties),
    ]:
        if draw(st.integers(0, 9)) > 0:
            raw[key] = draw(strategy)
    if draw(st.integers(0, 20)) == 0:
        raw["extra"] = 1
    return raw


# The first draws load the time zone database: not a slow strategy, so no health check on it.
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_events())
def test_fast_path_agrees_with_the_model(raw: dict[str, Any]) -> None:
    fast = _fast_event(raw)
    if fast is None:
        return
    model = parse_event(raw)  # must not raise: the fast path accepted it
    assert (fast.event_id, fast.customer_id, fast.metric) == (
        model.event_id,
        model.customer_id,
        model.metric,
    )
    assert fast.quantity == model.quantity
    assert fast.timestamp == model.timestamp and fast.timestamp.utcoffset().total_seconds() == 0
    assert fast.properties == model.properties


@pytest.mark.parametrize(
    "quantity", ["NaN", "Infinity", "-Infinity", "1e18", "0.0000001", True, 1.5, None]
)
def test_the_fast_path_leaves_bad_or_unusual_quantities_to_the_model(quantity: Any) -> None:
    raw = {
        "event_id": "e",
        "customer_id": "c",
        "metric": "m",
        "quantity": quantity,
        "timestamp": "2026-11-27T10:00:00+00:00",
    }
    assert _fast_event(raw) is None
    decoded = decode_event(raw)
    if isinstance(decoded, Rejection):
        assert decoded.detail.startswith("quantity")
        with pytest.raises(EventError):
            parse_event(raw)


def test_a_plain_event_takes_the_fast_path() -> None:
    raw = {
        "event_id": "e1",
        "customer_id": "c",
        "metric": "api_calls",
        "quantity": "2.5",
        "timestamp": "2026-11-27T12:00:00.5+01:00",
        "properties": {"region": "eu", "n": 3, "ok": True, "x": 1.5},
    }
    event = decode_event(raw)
    assert isinstance(event, Event)
    assert event.quantity == Decimal("2.5")
    assert event.timestamp.isoformat() == "2026-11-27T11:00:00.500000+00:00"


# Junk of any JSON shape, every character included (NUL, lone surrogates).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=15,
)
hostile_fields = {
    "event_id": any_text | json_values,
    "customer_id": any_text | json_values,
    "metric": any_text | json_values,
    "quantity": st.sampled_from(
        ["1e999999999", "-1e999999999", "1e-999999999", "0e999999999", "9" * 5000, "1"]
    )
    | json_values,
    "timestamp": st.sampled_from(
        ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-27T10:00:00Z"]
    )
    | json_values,
    "properties": st.dictionaries(any_text, json_values, max_size=4) | json_values,
}


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(json_values)
    return {key: draw(values) for key, values in hostile_fields.items() if draw(st.booleans())}


@given(raw=hostile_events())
def test_decoding_never_raises_and_every_refusal_names_a_field(raw: Any) -> None:
    decoded = decode_event(raw)
    if isinstance(decoded, Rejection):
        assert decoded.reason == "invalid_event" and decoded.detail
        return
    for text in (decoded.event_id, decoded.customer_id, decoded.metric):
        text.encode("utf-8")  # storable: valid Unicode ...
        assert "\x00" not in text  # ... without NUL
    assert abs(decoded.quantity) < 10**18
    assert decoded.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_id": "c\x00"}, "customer_id"),
        ({"metric": "\ud800"}, "metric"),
        ({"event_id": "e\udfff"}, "event_id"),
        ({"properties": {"k": "\x00"}}, "properties.k"),
        ({"properties": {"\ud800": 1}}, "properties"),
        ({"quantity": "1e999999999"}, "quantity"),
        ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
    ],
)
def test_what_the_storage_cannot_take_is_a_rejection_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    raw = {
        "event_id": "e",
        "customer_id": "c",
        "metric": "m",
        "timestamp": "2026-11-27T10:00:00+00:00",
        **change,
    }
    assert _fast_event(raw) is None
    decoded = decode_event(raw)
    assert isinstance(decoded, Rejection)
    assert decoded.detail.startswith(f"{field}:") or decoded.detail.startswith(f"{field}.")
    with pytest.raises(EventError):
        parse_event(raw)
