"""`meter worker` process groups SIGKILLed again and again while 100,000 events are ingested:
every kill lands mid-batch (the ledger is growing), the dead workers' messages come back after
the broker's heartbeat timeout, and in the end every event is counted exactly once — ledger,
rollups, Redis counters and the invoice of the period."""

from __future__ import annotations

import random
from functools import partial

from tasks.broker import make_broker
from tests.faults.checks import all_ingested, assert_exactly_once, close_period, invoiced, record
from tests.faults.processes import kill_worker, scalar, start_worker, stop_worker, wait_for
from tests.metering.helpers import in_previous_period, setup_customer

EVENTS = 100_000
KILLS = 4


def test_worker_groups_killed_repeatedly_lose_nothing_and_count_nothing_twice(
    clean_state: None,
) -> None:
    setup_customer()
    at = in_previous_period()
    broker = make_broker()
    record(broker, EVENTS, at=at, batch_size=1000)  # 100 messages waiting
    rng = random.Random(14)

    kills = 0
    while kills < KILLS:
        before = scalar("SELECT count(*) FROM usage_events")
        group = start_worker(processes=2, threads=2)
        try:
            # Mid-ingest by progress, not by time (a fast machine would finish the backlog in
            # a fixed sleep): once this group has written a random 1,000-12,000 more events.
            # Four kills leave at most ~70,000 written, however fast the workers are.
            target = before + rng.randint(1_000, 12_000)
            wait_for(partial(_written_at_least, target), 60, interval=0.02)
        finally:
            kill_worker(group)
        kills += 1
        assert scalar("SELECT count(*) FROM usage_events") < EVENTS, "killed too late to matter"

    group = start_worker(processes=2, threads=2, queues=("ingest", "billing"))
    try:
        wait_for(lambda: all_ingested(EVENTS), timeout=90)
        close_period(broker, at)
        invoice = invoiced(at)
    finally:
        stop_worker(group)
    assert_exactly_once(EVENTS, at, invoice)


def _written_at_least(target: int) -> bool:
    return scalar("SELECT count(*) FROM usage_events") >= target
