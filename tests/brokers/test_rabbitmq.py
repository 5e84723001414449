"""RabbitMQ as the broker (BROKER_URL=amqp://...): the whole path — ingest, alerts, the period
close and its invoice jobs — through real `meter worker` processes, and `meter ops stats`
reading its queue depths and the age of its oldest message."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dramatiq
import pytest
from typer.testing import CliRunner

from cli.main import app
from pricing.periods import billing_period
from storage.invoices.records import find_invoice
from tasks import UsageRecorder, names
from tasks import broker as broker_module
from tasks.broker import make_broker
from tasks.queues import queue_stats
from tests.alerts.helpers import D, fired, outbox_count, setup_customer
from tests.faults.processes import scalar, wait_for, worker, worker_env
from tests.metering.helpers import in_previous_period


@pytest.fixture
def rabbitmq(rabbitmq_url: str) -> Iterator[dramatiq.Broker]:
    broker = make_broker(rabbitmq_url)
    for queue in names.QUEUES:
        broker.declare_queue(queue, ensure=True)  # type: ignore[call-arg]
        broker.flush(queue)  # type: ignore[attr-defined]  # what an earlier test left
    yield broker
    broker.close()


def _record(broker: dramatiq.Broker, count: int, quantity: int, at: datetime | None) -> None:
    recorder = UsageRecorder(broker, batch_size=50)
    for _ in range(count):
        recorder.record("cus_a", "api_calls", quantity, timestamp=at)
    assert recorder.flush(timeout=20)
    recorder.close()


def test_ingest_alerts_and_invoices_run_on_rabbitmq(
    clean_state: None,
    rabbitmq: dramatiq.Broker,
    rabbitmq_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup_customer()  # 10,000 calls included; alerts at 80 %, 95 %, 100 %
    last_period = in_previous_period()
    _record(rabbitmq, 100, 96, None)  # 9,600 now (2 batches): 80 % and 95 %
    _record(rabbitmq, 50, 10, last_period)  # 500 last period (1 batch), for its invoice
    time.sleep(0.05)

    waiting = queue_stats(rabbitmq)  # nothing consumes yet: all of it waits in RabbitMQ
    batches = waiting["queues"]["ingest"]  # about 50 events each (the recorder's cut)
    assert batches >= 2 and waiting["queues"]["dead"] == 0
    assert waiting["oldest_message_age_s"] >= 0.05
    # Looking took nothing away: the message read at the head goes back (the nack is
    # asynchronous: a count right after may still miss it for a moment).
    wait_for(lambda: rabbitmq.get_queue_message_counts("ingest")[0] == batches, timeout=10)  # type: ignore[attr-defined]
    monkeypatch.setattr(broker_module, "_broker", rabbitmq)  # what `meter ops stats` reads
    shown = CliRunner().invoke(app, ["ops", "stats", "--json"])
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["queues"]["ingest"] == batches and document["warnings"] == []
    assert document["oldest_message_age_s"] >= waiting["oldest_message_age_s"]

    with worker("workers.app", queues=(), env=worker_env(BROKER_URL=rabbitmq_url)):
        wait_for(lambda: scalar("SELECT count(*) FROM usage_events") == 150, timeout=60)
        expected = [("usage", "api_calls", D("0.8")), ("usage", "api_calls", D("0.95"))]
        wait_for(lambda: fired() == expected, timeout=30)

        label = last_period.strftime("%Y-%m")  # the plan's UTC calendar months
        rabbitmq.enqueue(
            dramatiq.Message(
                queue_name=names.BILLING_QUEUE,
                actor_name=names.CLOSE_PERIOD,
                args=(label,),
                kwargs={},
                options={},
            )
        )  # close_period fans out generate_invoice through RabbitMQ, as the scheduler's does
        start = billing_period(last_period).start
        wait_for(lambda: find_invoice("cus_a", start) is not None, timeout=60)
        wait_for(lambda: sum(queue_stats(rabbitmq)["queues"].values()) == 0, timeout=30)

    invoice = find_invoice("cus_a", start)
    assert invoice is not None
    assert D(invoice.document["usage"]["api_calls"]) == 500
    assert scalar("SELECT sum(quantity) FROM usage_events") == 9600 + 500
    assert outbox_count() == 2
    idle = queue_stats(rabbitmq)
    assert idle["oldest_message_age_s"] == 0.0 and idle["queues"]["dead"] == 0
    assert datetime.now(UTC) > start
