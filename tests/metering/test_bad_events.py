"""One bad event never stops its batch: whatever it holds, it becomes a rejected event with a
reason (stored, escaped where PostgreSQL needs it) and the valid events beside it are counted
exactly once. Batches go through Dramatiq's own JSON encoding, as on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError

from storage.ledger import batches
from tasks.encoding import MessageEncoder
from tasks.ingest import ingest_events
from tests.metering.helpers import assert_consistent, batch, event, setup_customer

WIRE = MessageEncoder()  # what tasks.broker installs in every process


def over_the_wire(message: Any) -> Any:
    """What the worker's actor receives once Dramatiq has encoded and decoded it."""
    return WIRE.decode(WIRE.encode(message))


def raw_message(events: list[dict[str, Any]], replacements: dict[str, bytes]) -> bytes:
    """A message as a non-Python producer may write it: JSON bytes in which each placeholder
    (a string value) is replaced by raw bytes."""
    data = WIRE.encode({"args": [batch(events)], "kwargs": {}})
    for placeholder, raw in replacements.items():
        data = data.replace(json.dumps(placeholder).encode(), raw)
    return data


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"x": [value]}
    return value


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> None:
    setup_customer()


# (what is changed in an otherwise valid api_calls event, the reason, the field named)
BAD_EVENTS: list[tuple[dict[str, Any], str, str]] = [
    ({"customer_id": "cus\x00_1"}, "invalid_event", "customer_id"),
    ({"metric": "api\x00calls"}, "invalid_event", "metric"),
    ({"event_id": "e\x00"}, "invalid_event", "event_id"),
    ({"properties": {"note": "x\x00y"}}, "invalid_event", "properties.note"),
    ({"properties": {"no\x00te": "x"}}, "invalid_event", "properties"),
    ({"customer_id": "cus_\ud800"}, "invalid_event", "customer_id"),
    ({"metric": "\udfffapi"}, "invalid_event", "metric"),
    ({"event_id": "e-\udc80"}, "invalid_event", "event_id"),
    ({"properties": {"note": "\ud800"}}, "invalid_event", "properties.note"),
    ({"properties": {"\udbff": 1}}, "invalid_event", "properties"),
    ({"quantity": "1e999999999"}, "invalid_event", "quantity"),
    ({"quantity": "-1e999999999"}, "invalid_event", "quantity"),
    ({"quantity": "1e-999999999"}, "invalid_event", "quantity"),
    ({"quantity": 10**4000}, "invalid_event", "quantity"),
    ({"timestamp": "9999-12-31T23:59:59-14:00"}, "invalid_event", "timestamp"),
    ({"timestamp": "0001-01-01T00:00:00+14:00"}, "invalid_event", "timestamp"),
    ({"properties": {"n": 10**600}}, "invalid_event", "properties.n"),
    ({"properties": deep(300)}, "invalid_event", "properties.x"),
    ({"extra\x00": "\ud800"}, "invalid_event", "extra"),
]


@pytest.mark.parametrize(("change", "reason", "field"), BAD_EVENTS, ids=lambda v: repr(v)[:50])
def test_a_bad_event_is_rejected_and_the_rest_of_its_batch_counted(
    db: Any, change: dict[str, Any], reason: str, field: str
) -> None:
    bad = {**event(event_id="bad"), **change}
    good = [event(quantity=2) for _ in range(20)]
    message = batch([*good[:10], bad, *good[10:]])
    ingest_events(over_the_wire(message))
    ingest_events(over_the_wire(message))  # a redelivery changes nothing
    assert assert_consistent()["api_calls"] == 40
    rows = db.execute("SELECT reason, detail, payload FROM rejected_events").fetchall()
    assert len(rows) == 1
    stored_reason, detail, payload = rows[0]
    assert stored_reason == reason
    assert detail.startswith(field), detail
    assert isinstance(payload, dict)
    assert batches.stats() == {"accepted": 20, "duplicates": 0, "rejected": {reason: 1}}


def test_twenty_valid_events_and_one_nul_in_a_property_count_twenty(db: Any) -> None:
    """The issue's example: before, 0 of 20 were counted and the batch was retried for an hour."""
    events = [event() for _ in range(20)]
    events.append(event(properties={"note": "x\x00y"}))
    ingest_events(over_the_wire(batch(events)))
    assert assert_consistent()["api_calls"] == 20
    (detail,) = db.execute("SELECT detail FROM rejected_events").fetchone()
    assert detail == "properties.note: must not contain NUL (\\u0000)"


def test_a_rejected_event_keeps_its_text_with_nul_and_surrogates_escaped(db: Any) -> None:
    bad = {
        **event(),
        "event_id": "id\x00",
        "customer_id": "cus_\ud800",
        "metric": "m\x00\udfff",
        "properties": {"k\x00": "v\ud83d", "deep": deep(100)},
    }
    ingest_events(over_the_wire(batch([bad, event()])))
    event_id, customer_id, metric, payload = db.execute(
        "SELECT event_id, customer_id, metric, payload FROM rejected_events"
    ).fetchone()
    # The escape is the six characters \uXXXX: readable, and storable as text and jsonb.
    assert (event_id, customer_id, metric) == ("id\\u0000", "cus_\\ud800", "m\\u0000\\udfff")
    assert payload["properties"]["k\\u0000"] == "v\\ud83d"
    nested = payload["properties"]["deep"]
    for _ in range(15):  # kept to a depth of 32, then a note
        nested = nested["x"][0]
    assert nested == "<nested deeper than 32 levels: not kept>"
    assert assert_consistent()["api_calls"] == 1


def test_a_quantity_of_zero_with_a_huge_exponent_is_a_zero() -> None:
    ingest_events(over_the_wire(batch([event(quantity="0e999999999"), event(quantity=3)])))
    assert assert_consistent()["api_calls"] == 3
    assert batches.stats()["accepted"] == 2


def test_a_field_value_out_of_range_is_an_invalid_value(db: Any) -> None:
    """`payments` sums properties.amount: an amount the ledger cannot sum is refused, not
    summed into a decimal.Overflow."""
    events = [
        event("payments", properties={"amount": "1e999999999"}),
        event("payments", properties={"amount": "-1e30"}),
        event("payments", properties={"amount": "1e-999999"}),
        event("payments", properties={"amount": "12.5"}),
        event("payments", properties={"amount": 0.1 / 3}),  # a float's 17 digits are fine
    ]
    ingest_events(over_the_wire(batch(events)))
    reasons = [r for (r,) in db.execute("SELECT reason FROM rejected_events").fetchall()]
    assert reasons == ["invalid_value"] * 3
    assert assert_consistent()["payments"] == Decimal("12.5") + Decimal(repr(0.1 / 3))


@pytest.mark.parametrize(
    "batch_id",
    ["b\x00", "\ud800", "x" * 129, 42, None, "", ["list"]],
    ids=repr,
)
def test_a_batch_id_that_cannot_be_a_key_falls_back_to_the_content_digest(
    db: Any, batch_id: Any
) -> None:
    message = over_the_wire({"batch_id": batch_id, "events": [event(quantity=3), event()]})
    ingest_events(message)
    ingest_events(message)  # the same content: the same digest, counted once
    assert assert_consistent()["api_calls"] == 4
    (stored,) = db.execute("SELECT batch_id FROM ingest_batches").fetchone()
    assert stored.startswith("sha256:")


@pytest.mark.parametrize(
    "message",
    [
        None,
        "a string",
        42,
        [{"events": []}],
        {"events": "not a list"},
        {"events": {"0": {}}},
        {"batch_id": "b\x00", "events": None},
        {"junk": "\ud800\x00", "nested": deep(400)},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_malformed_batch_is_kept_whole_and_acked(db: Any, message: Any) -> None:
    ingest_events(over_the_wire(message))  # no exception: nothing to retry
    (payload, error) = db.execute("SELECT payload, error FROM failed_batches").fetchone()
    assert json.loads(payload) == over_the_wire(message)
    assert error.startswith("malformed batch")


def test_events_are_judged_against_now_not_an_overflowing_window() -> None:
    """A timestamp at the very edge of what a datetime holds is only out of the window."""
    ingest_events(
        over_the_wire(
            batch(
                [
                    event(at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
                    event(at=datetime(1, 1, 1, tzinfo=UTC)),
                    event(),
                ]
            )
        )
    )
    assert assert_consistent()["api_calls"] == 1
    assert batches.stats()["rejected"] == {"timestamp_out_of_window": 2}


def test_a_kept_batch_holding_nul_surrogates_and_overflows_is_stored_whole_and_replayed(
    db: Any,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from tasks.ingest import ingest_failed

    bad = [
        event(properties={"note": "x\x00y"}),
        event(customer_id="cus_\ud800"),
        {**event(), "quantity": "1e999999999"},
        {**event(), "timestamp": "9999-12-31T23:59:59-14:00"},
    ]
    message = over_the_wire(batch([event(quantity=4), *bad, event(quantity=5)]))
    ingest_failed({"args": [message]}, {"last_error": "database was down"})
    (payload,) = db.execute("SELECT payload FROM failed_batches").fetchone()
    assert payload.isascii() and json.loads(payload) == message  # whole, to the last character

    runner = CliRunner()
    result = runner.invoke(app, ["ops", "replay-failed", "--inline", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"replayed": [1], "kept": [], "errors": []}
    assert assert_consistent()["api_calls"] == 9
    assert batches.stats()["rejected"] == {"invalid_event": 4}
    again = runner.invoke(app, ["ops", "replay-failed", "--inline", "--json"])
    assert json.loads(again.stdout)["replayed"] == []
    assert assert_consistent()["api_calls"] == 9


def test_replay_keeps_a_batch_whose_ingest_fails_again_and_tries_the_others(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import tasks.ingest
    from cli.main import app

    first, second = batch([event(quantity=1)]), batch([event(quantity=2)])
    for message in (first, second, "garbage"):
        tasks.ingest.ingest_failed({"args": [message]}, {"last_error": "boom"})
    real = tasks.ingest.ingest_events

    def ingest_unless_first(payload: Any) -> None:
        if payload["batch_id"] == first["batch_id"]:
            raise RuntimeError("database is down")
        real(payload)

    monkeypatch.setattr(tasks.ingest, "ingest_events", ingest_unless_first)
    result = CliRunner().invoke(app, ["ops", "replay-failed", "--inline", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "replayed": [2],
        "kept": [1, 3],
        "errors": [{"id": 1, "error": "RuntimeError: database is down"}],
    }
    assert "failed batch 1: RuntimeError: database is down" in result.stderr
    assert assert_consistent()["api_calls"] == 2
    pending = [
        row[0] for row in db.execute("SELECT id FROM failed_batches WHERE replayed_at IS NULL")
    ]
    assert pending == [1, 3]


def test_bytes_that_are_not_utf8_or_an_integer_too_long_for_int_cost_one_event_each(
    db: Any,
) -> None:
    """Dramatiq's own decoder would give up on the whole message (never reaching the actor)."""
    events = [
        event(quantity=3),
        {**event(), "quantity": "<huge>"},
        event(properties={"note": "<not utf-8>"}),
        event(customer_id="<not utf-8 either>"),
        event(properties={"n": "<huge>"}),
        event(quantity=4),
    ]
    data = raw_message(
        events,
        {
            "<huge>": b"9" * 5000,
            "<not utf-8>": b'"caf\xe9"',
            "<not utf-8 either>": b'"\xff\xfe"',
        },
    )
    with pytest.raises(DecodeError):  # what Dramatiq's own decoder does with it
        JSONEncoder().decode(data)
    with pytest.raises(ValueError, match="digits"):  # and with the long integer alone
        JSONEncoder().decode(raw_message([{"quantity": "<huge>"}], {"<huge>": b"9" * 5000}))
    [message] = WIRE.decode(data)["args"]
    ingest_events(message)
    assert assert_consistent()["api_calls"] == 7
    rows = db.execute("SELECT reason, detail FROM rejected_events ORDER BY id").fetchall()
    assert [reason for reason, _ in rows] == ["invalid_event"] * 4
    assert sorted(detail.split(":")[0] for _, detail in rows) == [
        "customer_id",
        "properties.n",
        "properties.note",
        "quantity",
    ]
