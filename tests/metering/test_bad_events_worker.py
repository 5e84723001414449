"""A real `dramatiq` worker process: a message written the way a non-Python producer may write
it, 20 valid events and one with NUL in a property, counts the 20 at its first delivery."""

from __future__ import annotations

import dramatiq

from storage import ingest
from tasks.broker import INGEST_ACTOR, INGEST_QUEUE, make_broker
from tests.metering.helpers import assert_consistent, batch, event, setup_customer
from tests.metering.test_worker_faults import _scalar, wait_for, worker


def test_a_worker_counts_the_valid_events_of_a_batch_holding_nul_and_surrogates(
    clean_state: None,
) -> None:
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
    broker.close()

    with worker("workers.app"):
        wait_for(lambda: _scalar("SELECT count(*) FROM rejected_events") == 3)
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
        wait_for(lambda: _scalar(applied) == 1)
    assert assert_consistent()["api_calls"] == 40
    assert ingest.stats() == {"accepted": 20, "duplicates": 0, "rejected": {"invalid_event": 3}}
    assert _scalar("SELECT count(*) FROM failed_batches") == 0
