"""The one batch decoder (`pricing.decoding.decode_batch`): whatever a batch holds, it never
raises; every event it keeps is storable and in UTC; every other one is a rejection at its
position, naming the field; and one bad event costs only itself."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.decoding import decode_batch, decode_event
from pricing.events import Event, EventError

VALID = {
    "event_id": "e",
    "customer_id": "c",
    "metric": "m",
    "timestamp": "2026-11-27T10:00:00+00:00",
}


def test_a_plain_batch_decodes_in_utc_with_exact_quantities() -> None:
    raw = [
        {
            **VALID,
            "quantity": "2.5",
            "timestamp": "2026-11-27T12:00:00.5+01:00",
            "properties": {"region": "eu", "n": 3, "ok": True, "x": 1.5},
        },
        {**VALID, "event_id": "e2", "quantity": 7},
        {**VALID, "event_id": "e3", "quantity": "1.5000000", "timestamp": "2026-11-27T10:00:00Z"},
        {**VALID, "event_id": "e4", "quantity": "0e999999999"},
    ]
    events, rejected = decode_batch(raw)
    assert rejected == []
    first, second, third, fourth = events
    assert isinstance(first, Event)
    assert first.quantity == Decimal("2.5")
    assert first.timestamp.isoformat() == "2026-11-27T11:00:00.500000+00:00"
    assert first.properties == {"region": "eu", "n": 3, "ok": True, "x": 1.5}
    assert (second.quantity, third.quantity, fourth.quantity) == (7, Decimal("1.5"), 0)
    assert str(fourth.quantity) == "0"  # no exponent PostgreSQL cannot read
    assert third.timestamp.tzinfo is UTC


def test_bad_events_are_rejected_at_their_position_and_the_rest_kept() -> None:
    raw: list[Any] = [
        {**VALID, "event_id": "a"},
        {**VALID, "event_id": "b", "quantity": "abc"},
        "not an event",
        {**VALID, "event_id": "c"},
        {**VALID, "event_id": "d", "quantity": "0.0000001"},
        {**VALID, "event_id": "e", "surprise": 1},
    ]
    events, rejected = decode_batch(raw)
    assert [e.event_id for e in events] == ["a", "c"]
    assert [(r.position, r.reason, r.detail) for r in rejected] == [
        (1, "invalid_event", "quantity: not a number: 'abc'"),
        (2, "invalid_event", "event: expected an object, got str"),
        (4, "invalid_event", "quantity: at most 6 decimal places, got 1E-7"),
        (5, "invalid_event", "surprise: unknown key"),
    ]
    assert [r.payload for r in rejected] == [raw[1], raw[2], raw[4], raw[5]]


def test_a_problem_the_schema_cannot_see_is_found_after_it_too() -> None:
    """msgspec takes the whole batch; the per-event check still finds the NUL."""
    raw = [VALID, {**VALID, "metric": "api\x00calls"}, {**VALID, "event_id": "x"}]
    events, rejected = decode_batch(raw)
    assert [e.event_id for e in events] == ["e", "x"]
    assert [(r.position, r.detail) for r in rejected] == [
        (1, "metric: must not contain NUL (\\u0000)")
    ]


def test_one_event_reports_every_missing_key() -> None:
    with pytest.raises(EventError) as caught:
        decode_event({"metric": "api_calls", "colour": "red"})
    assert caught.value.errors == [
        ("event_id", "event_id: required"),
        ("customer_id", "customer_id: required"),
        ("timestamp", "timestamp: required"),
        ("colour", "colour: unknown key"),
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_id": "c\x00"}, "customer_id"),
        ({"metric": "\ud800"}, "metric"),
        ({"event_id": "e\udfff"}, "event_id"),
        ({"properties": {"k": "\x00"}}, "properties.k"),
        ({"properties": {"\ud800": 1}}, "properties"),
        ({"properties": {"n": 10**600}}, "properties.n"),
        ({"properties": {"x": float("nan")}}, "properties.x"),
        ({"quantity": "1e999999999"}, "quantity"),
        ({"quantity": "NaN"}, "quantity"),
        ({"quantity": Decimal("9" * 5000)}, "quantity"),
        ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
        ({"timestamp": "2026-11-27T10:00:00+01:00:30"}, "timestamp"),
    ],
)
def test_what_the_storage_cannot_take_is_a_rejection_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    events, [rejection] = decode_batch([VALID, {**VALID, **change}])
    assert len(events) == 1
    assert rejection.position == 1
    assert rejection.detail.startswith((f"{field}:", f"{field}.")), rejection.detail


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
    | st.decimals(allow_nan=True, allow_infinity=True).map(str)
    | json_values,
    "timestamp": st.sampled_from(
        ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-27T10:00:00Z"]
    )
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | json_values,
    "properties": st.dictionaries(any_text, json_values, max_size=4) | json_values,
}


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    return {key: draw(values) for key, values in hostile_fields.items() if draw(st.booleans())}


# The first draws load the time zone database: not a slow strategy, so no health check on it.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(hostile_events(), max_size=6))
def test_decoding_never_raises_and_every_refusal_names_a_field(batch: list[Any]) -> None:
    events, rejected = decode_batch(batch)
    assert len(events) + len(rejected) == len(batch)
    assert sorted(r.position for r in rejected if r.position is not None) == [
        r.position for r in rejected
    ]
    for rejection in rejected:
        assert rejection.reason == "invalid_event"
        field = rejection.detail.split(":", 1)[0].split(".", 1)[0]
        assert field in {*VALID, "quantity", "properties", "event"} or (
            isinstance(batch[rejection.position or 0], dict)
            and field in batch[rejection.position or 0]  # an unknown key, by its name
        ), rejection.detail
    for event in events:
        for text in (event.event_id, event.customer_id, event.metric):
            text.encode("utf-8")  # storable: valid Unicode ...
            assert "\x00" not in text  # ... without NUL
        assert abs(event.quantity) < 10**18
        assert event.timestamp.utcoffset() == timedelta(0)
    # Judged alone, each event gets the same answer as in its batch.
    alone = [decode_batch([item]) for item in batch]
    assert [len(kept) for kept, _ in alone] == [
        int(i not in {r.position for r in rejected}) for i in range(len(batch))
    ]
