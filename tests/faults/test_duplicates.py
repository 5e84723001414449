"""Messages duplicated and reordered: overlapping batches, each sent more than once (the same
batch id) and again under another batch id (a producer that re-sent its events), all shuffled,
consumed by concurrent worker processes. Each event counts once."""

from __future__ import annotations

import random
from typing import Any

import dramatiq

from tasks import names
from tasks.broker import make_broker
from tests.faults.checks import all_ingested, assert_exactly_once, close_period, invoiced
from tests.faults.processes import wait_for, worker
from tests.metering.helpers import event, in_previous_period, setup_customer

BATCHES = 20
SIZE = 500
STRIDE = 400  # consecutive batches share 100 events
EVENTS = (BATCHES - 1) * STRIDE + SIZE


def _message(batch: dict[str, Any]) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=names.INGEST_QUEUE,
        actor_name=names.INGEST_EVENTS,
        args=(batch,),
        kwargs={},
        options={},
    )


def test_duplicated_and_reordered_messages_count_each_event_once(clean_state: None) -> None:
    setup_customer()
    at = in_previous_period()
    rng = random.Random(14)
    batches = []
    for b in range(BATCHES):
        events = [event(event_id=f"d{i}", at=at) for i in range(b * STRIDE, b * STRIDE + SIZE)]
        rng.shuffle(events)  # reordered inside the batch too
        batches.append({"batch_id": f"batch-{b}", "events": events})
    messages = [batch for batch in batches for _ in range(rng.randint(1, 3))]
    messages += [{**batch, "batch_id": f"resent-{batch['batch_id']}"} for batch in batches[::3]]
    rng.shuffle(messages)

    broker = make_broker()
    broker.declare_queue(names.INGEST_QUEUE)
    for batch in messages:
        broker.enqueue(_message(batch))

    with worker("workers.app", processes=2, threads=4, queues=("ingest", "billing")):
        wait_for(lambda: all_ingested(EVENTS), timeout=60)
        close_period(broker, at)
        invoice = invoiced(at)
    assert_exactly_once(EVENTS, at, invoice)
