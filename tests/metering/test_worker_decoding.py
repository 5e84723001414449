"""The worker's message decoder (`tasks.encoding.WorkerEncoder`): an ingest batch's events stay
JSON text until `decode_batch` reads them into events in one call. Whatever a message holds, the
outcome is the producers' decoder's: the same events accepted, the same rejections (reason,
detail, payload, position), the same batch id for a batch without one, the same malformed
batch kept; and a message re-encoded for a retry or a dead letter carries the same JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import dramatiq
import pytest

from pricing.decoding import EventsJSON, decode_batch
from storage.ledger import batches
from tasks.encoding import MessageEncoder, WorkerEncoder
from tasks.ingest import batch_identity, ingest_events
from tasks.names import INGEST_EVENTS, INGEST_FAILED, INGEST_QUEUE
from tests.metering.helpers import assert_consistent, batch, event, setup_customer
from tests.metering.test_bad_events import BAD_EVENTS, deep

PRODUCERS = MessageEncoder()  # what tasks.broker installs in every process
WORKER = WorkerEncoder()  # what workers.app installs in the worker's


def message_bytes(payload: Any) -> bytes:
    return PRODUCERS.encode(
        {
            "queue_name": INGEST_QUEUE,
            "actor_name": INGEST_EVENTS,
            "args": [payload],
            "kwargs": {},
            "options": {},
            "message_id": "m-1",
            "message_timestamp": 1,
        }
    )


def in_worker(payload: Any) -> Any:
    """What the ingest actor receives in a worker."""
    return WORKER.decode(message_bytes(payload))["args"][0]


def in_producer(payload: Any) -> Any:
    """What it received before, and still receives in a process with the producers' decoder."""
    return PRODUCERS.decode(message_bytes(payload))["args"][0]


def outcome(events: Any) -> tuple[list[Any], list[tuple[Any, ...]]]:
    accepted, rejected = decode_batch(events)
    return accepted, [(r.reason, r.detail, r.payload, r.position) for r in rejected]


def test_a_batch_reaches_the_actor_as_json_text_and_decodes_to_the_same_events() -> None:
    good = batch([event(quantity=q) for q in (1, "2.5", 3)])
    received = in_worker(good)
    assert isinstance(received["events"], EventsJSON)  # no dict per event was built
    assert received["batch_id"] == good["batch_id"]
    assert outcome(received["events"]) == outcome(in_producer(good)["events"])
    assert len(outcome(received["events"])[0]) == 3


@pytest.mark.parametrize(("change", "reason", "field"), BAD_EVENTS, ids=lambda v: repr(v)[:50])
def test_a_bad_event_gets_the_same_rejection_and_the_rest_the_same_events(
    change: dict[str, Any], reason: str, field: str
) -> None:
    bad = {**event(event_id="bad"), **change}
    good = [event(quantity=2) for _ in range(6)]
    sent = batch([*good[:3], bad, *good[3:]])
    accepted, rejected = outcome(in_worker(sent)["events"])
    assert (accepted, rejected) == outcome(in_producer(sent)["events"])
    assert len(accepted) == 6
    assert [(r[0], r[3]) for r in rejected] == [(reason, 3)]
    assert rejected[0][1].startswith(field), rejected[0][1]


def test_bytes_that_are_not_utf8_and_an_overlong_integer_cost_one_event_each() -> None:
    events = [event(quantity=1), event(properties={"note": "<latin-1>"}), event(quantity=1)]
    events.append({**event(), "quantity": "<huge>"})
    data = message_bytes(batch(events))
    data = data.replace(json.dumps("<latin-1>").encode(), b'"caf\xe9"')
    data = data.replace(json.dumps("<huge>").encode(), b"9" * 5000)
    accepted, rejected = outcome(WORKER.decode(data)["args"][0]["events"])
    assert (accepted, rejected) == outcome(PRODUCERS.decode(data)["args"][0]["events"])
    assert len(accepted) == 2
    fields = [(r[1].split(":")[0], r[3]) for r in rejected]
    assert fields == [("properties.note", 1), ("quantity", 3)]


def test_a_bad_event_in_a_good_batch_is_rejected_and_the_rest_counted(clean_state: None) -> None:
    setup_customer()
    sent = batch([event(quantity=2) for _ in range(10)] + [event(quantity="abc")])
    received = in_worker(sent)
    ingest_events(received)
    ingest_events(in_worker(sent))  # a redelivery changes nothing
    assert assert_consistent()["api_calls"] == 20
    assert batches.stats() == {"accepted": 10, "duplicates": 0, "rejected": {"invalid_event": 1}}


@pytest.mark.parametrize(
    "payload",
    [
        None,
        42,
        [{"events": []}],
        {"events": "not a list"},
        {"events": {"0": {}}},
        {"batch_id": "b\x00", "events": None},
        {"junk": "\ud800\x00", "nested": deep(400)},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_malformed_batch_is_kept_whole_as_before(clean_state: None, payload: Any) -> None:
    from storage import db

    ingest_events(in_worker(payload))  # no exception: nothing to retry
    with db.connection() as conn:
        row = conn.execute("SELECT payload, error FROM failed_batches").fetchone()
    assert row is not None
    stored, error = row
    assert json.loads(stored) == in_producer(payload)
    assert error.startswith("malformed batch")


@pytest.mark.parametrize("batch_id", [None, "", 42, "b\x00", "x" * 129, ["list"]], ids=repr)
def test_a_batch_without_a_usable_id_gets_the_same_digest(batch_id: Any) -> None:
    sent = {"batch_id": batch_id, "events": [event(quantity=3), event(properties={"é": "ü"})]}
    if batch_id is None:
        del sent["batch_id"]
    derived = batch_identity(in_worker(sent))
    assert derived.startswith("sha256:")
    assert derived == batch_identity(in_producer(sent))


@pytest.fixture
def worker_encoder() -> Any:
    before = dramatiq.get_encoder()
    dramatiq.set_encoder(WORKER)
    yield
    dramatiq.set_encoder(before)


def test_a_retried_or_dead_lettered_message_carries_the_same_json(worker_encoder: None) -> None:
    sent = batch([event(quantity="1.5", properties={"région": "eu", "n": 2}), event()])
    data = message_bytes(sent)
    received = dramatiq.Message.decode(data)  # as the Redis and RabbitMQ brokers do
    assert isinstance(received.args[0]["events"], EventsJSON)
    # A retry is this message copied with new options, enqueued with `encode()` (both brokers).
    retry = received.copy(options={"retries": 1, "traceback": "Retry: é"})
    again = retry.encode()
    events_text = bytes(received.args[0]["events"].raw)
    assert events_text in data and events_text in again  # the events' text, byte for byte
    assert PRODUCERS.decode(again) == {**PRODUCERS.decode(data), "options": retry.options}
    # Decoded again in a worker: the same batch, the same events.
    second = dramatiq.Message.decode(again)
    assert second.args[0]["batch_id"] == sent["batch_id"]
    assert outcome(second.args[0]["events"]) == outcome(sent["events"])
    # Retries exhausted: the message's data travels to ingest_failed inside another message.
    dead: dramatiq.Message[None] = dramatiq.Message(
        queue_name=INGEST_QUEUE,
        actor_name=INGEST_FAILED,
        args=(received.asdict(), {"retries": 20}),
        kwargs={},
        options={},
    )
    carried = PRODUCERS.decode(dead.encode())["args"][0]
    assert carried["args"] == [sent]


def test_a_plain_ascii_batch_still_gets_every_check_of_finish() -> None:
    """ASCII text without escapes skips only the text checks: quantities (each text checked
    once, then reused), time zones and properties are judged as before."""
    at = datetime.now(UTC).replace(microsecond=0)
    events = [
        event(quantity="1.5000000"),
        event(quantity="0.0000001"),
        event(quantity="1.5000000"),
        event(quantity="0.0000001"),
        {**event(), "timestamp": at.astimezone(timezone(timedelta(hours=2))).isoformat()},
        event(properties={"n": 10**600}),
        event(quantity="7"),
    ]
    received = in_worker(batch(events))["events"]
    assert bytes(received.raw).isascii() and b"\\u" not in bytes(received.raw)
    accepted, rejected = outcome(received)
    assert (accepted, rejected) == outcome(in_producer(batch(events))["events"])
    assert [str(e.quantity) for e in accepted] == ["1.500000", "1.500000", "1", "7"]
    assert accepted[2].timestamp == at and accepted[2].timestamp.tzinfo is UTC
    assert [(r[1].split(":")[0], r[3]) for r in rejected] == [
        ("quantity", 1),
        ("quantity", 3),
        ("properties.n", 5),
    ]
