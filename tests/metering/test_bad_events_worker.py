"""A real `dramatiq` worker process: messages written the way a non-Python producer may write
them, valid events mixed with NUL, lone surrogates, bytes that are not UTF-8, overflowing
quantities and an integer too long for int(), count every valid event at first delivery."""

from __future__ import annotations

import json
import time
import uuid

import dramatiq

from storage.ledger import batches
from tasks.broker import INGEST_ACTOR, INGEST_QUEUE, make_broker
from tasks.encoding import MessageEncoder
from tests.faults.processes import scalar as _scalar
from tests.faults.processes import wait_for, worker
from tests.metering.helpers import assert_consistent, batch, event, setup_customer


def test_a_worker_counts_the_valid_events_of_batches_holding_junk(clean_state: None) -> None:
    setup_customer()
    events = [event(quantity=2) for _ in range(20)]
    events.insert(7, event(properties={"note": "x\x00y"}))
    events.insert(13, event(customer_id="cus_\ud800"))
    events.insert(17, {**event(), "quantity": "1e999999999"})
    broker = make_broker()
    broker.declare_queue(INGEST_QUEUE)
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=INGEST_QUEUE,
        actor_name=INGEST_ACTOR,
        args=(batch(events),),
        kwargs={},
        options={},
    )
    broker.enqueue(message)

    # Written straight into Redis as the README tells other producers to (HSET + RPUSH), with
    # bytes that Dramatiq's own decoder refuses: not UTF-8, and 5000 digits.
    redis_id = str(uuid.uuid4())
    raw_events = [
        event(quantity=1),
        event(properties={"note": "<latin-1>"}),
        {**event(), "quantity": "<huge>"},
        event(quantity=1),
    ]
    envelope = {
        "queue_name": INGEST_QUEUE,
        "actor_name": INGEST_ACTOR,
        "args": [batch(raw_events)],
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    data = MessageEncoder().encode(envelope)
    data = data.replace(json.dumps("<latin-1>").encode(), b'"caf\xe9"')
    data = data.replace(json.dumps("<huge>").encode(), b"9" * 5000)
    client = broker.client  # type: ignore[attr-defined]
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"dramatiq:{INGEST_QUEUE}.msgs", redis_id, data)
        pipe.rpush(f"dramatiq:{INGEST_QUEUE}", redis_id)
        pipe.execute()
    broker.close()

    with worker("workers.app"):
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
        wait_for(lambda: _scalar(applied) == 2)
    assert assert_consistent()["api_calls"] == 42
    assert batches.stats() == {"accepted": 22, "duplicates": 0, "rejected": {"invalid_event": 5}}
    assert _scalar("SELECT count(*) FROM failed_batches") == 0
