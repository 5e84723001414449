"""The ingest fast path decodes exactly what the `UsageEvent` model accepts, and leaves
everything else to it (so every rejection still gets the model's message)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.events import EventError, parse_event
from pricing.metering import Event, Rejection, _fast_event, decode_event

texts = st.text(min_size=0, max_size=140)
quantities = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**19), max_value=10**19),
    st.sampled_from(["1", "0.000001", "0.0000001", "1.500000000", "1e3", "-2", "abc", ""]),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27", "not a time", ""]),
    st.integers(),
)
property_values = st.one_of(
    st.text(max_size=600), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none()
)
properties = st.one_of(
    st.dictionaries(st.text(max_size=70), property_values, max_size=55), st.none(), st.integers()
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
