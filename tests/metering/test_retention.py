"""Pruning the ingest bookkeeping past the accepted window, and the running totals that
`meter ops stats` reads instead of summing ingest_batches.

Every moment is an input: batches are ingested "as if received" at chosen instants and the
pruning is run "as if now" at others, so nothing here depends on today's date.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from yoyo import get_backend, read_migrations  # type: ignore[import-untyped]

from pricing.plans import load_plan
from scheduler.jobs import JOBS
from services import ingest
from services.customers import create_customer
from storage.catalog.plans import apply_plan
from storage.ledger import batches, retention
from storage.migrate import MIGRATIONS_DIR, migrate, yoyo_url
from storage.usage.rollups import snapshot
from tasks import maintenance
from tests.metering.helpers import PLAN, event

STARTS = datetime(2026, 1, 1, tzinfo=UTC)
RECEIVED = datetime(2026, 2, 1, 12, tzinfo=UTC)  # the old batch arrives
LATER = RECEIVED + timedelta(days=10)  # a newer batch arrives


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> None:
    apply_plan(load_plan(PLAN))
    create_customer("cus_1", "live", starts_at=STARTS)


def kept_for() -> timedelta:
    """How long after its reception a row is kept: `cutoff(now)` is `now` minus this."""
    return RECEIVED - retention.cutoff(RECEIVED)


def arriving(at: datetime, count: int, batch_id: str, **fields: Any) -> ingest.IngestOutcome:
    events = [event(quantity=2, at=at - timedelta(hours=1), **fields) for _ in range(count)]
    return ingest.ingest_batch(batch_id, events, now=at)


def rows(db: psycopg.Connection, table: str) -> int:
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def api_calls(at: datetime) -> object:
    """The rollup total of api_calls in the customer's (calendar month) segment holding `at`."""
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    state = snapshot("cus_1", start).state.metrics.get("api_calls")
    return state.total if state else 0


def test_the_window_is_the_accepted_window_plus_the_future_allowance_and_a_margin(
    settings: Any,
) -> None:
    assert kept_for() == timedelta(
        days=settings.METER_ACCEPT_PAST_DAYS + 1, seconds=settings.METER_ACCEPT_FUTURE_SECONDS
    )


def test_rows_inside_the_window_are_kept_and_older_ones_deleted(db: psycopg.Connection) -> None:
    for n in range(5):  # more rows than a chunk: the chunks loop until nothing is left
        arriving(RECEIVED, 3, f"old-{n}")
    arriving(LATER, 4, "new")
    assert (rows(db, "event_ids"), rows(db, "ingest_batches")) == (19, 6)

    edge = RECEIVED + kept_for()  # the old rows are exactly as old as the window: kept
    assert retention.prune(edge, chunk=2).event_ids == 0
    assert (rows(db, "event_ids"), rows(db, "ingest_batches")) == (19, 6)

    report = retention.prune(edge + timedelta(microseconds=1), chunk=2)
    assert (report.event_ids, report.ingest_batches) == (15, 5)
    assert (rows(db, "event_ids"), rows(db, "ingest_batches")) == (4, 1)
    claims = db.execute("SELECT batch_id FROM ingest_batches").fetchall()
    assert claims == [("new",)]


def test_pruning_twice_is_harmless(db: psycopg.Connection) -> None:
    arriving(RECEIVED, 3, "old")
    arriving(LATER, 4, "new")
    now = LATER + timedelta(days=5)
    while retention.cutoff(now) <= RECEIVED:
        now += timedelta(days=1)
    first = retention.prune(now)
    second = retention.prune(now)
    assert (first.event_ids, first.ingest_batches) == (3, 1)
    assert (second.event_ids, second.ingest_batches, second.totals_folded) == (0, 0, 0)
    assert (rows(db, "event_ids"), rows(db, "ingest_batches")) == (4, 1)


def test_a_duplicate_inside_the_window_is_still_caught_after_pruning(
    db: psycopg.Connection,
) -> None:
    arriving(RECEIVED, 3, "old")
    recent = event(quantity=5, at=LATER - timedelta(hours=1), event_id="kept-id")
    ingest.ingest_batch("new", [recent], now=LATER)
    assert api_calls(LATER) == 3 * 2 + 5  # both batches fall in February
    now = RECEIVED + kept_for() + timedelta(seconds=1)
    assert retention.prune(now).event_ids == 3
    assert rows(db, "event_ids") == 1

    # The same event again, in another batch and with another timestamp (still acceptable).
    resend = dict(recent, timestamp=(now - timedelta(hours=2)).isoformat())
    outcome = ingest.ingest_batch("resend", [resend], now=now)
    assert (outcome.accepted, outcome.duplicates) == (0, 1)
    assert api_calls(LATER) == 3 * 2 + 5


def test_a_batch_redelivered_after_its_claim_was_pruned_is_not_counted_again(
    db: psycopg.Connection,
) -> None:
    events = [event(quantity=2, at=RECEIVED - timedelta(hours=1)) for _ in range(3)]
    assert ingest.ingest_batch("old", events, now=RECEIVED).accepted == 3
    before = batches.stats()["accepted"]
    now = RECEIVED + kept_for() + timedelta(seconds=1)
    retention.prune(now)
    assert rows(db, "ingest_batches") == rows(db, "event_ids") == 0

    again = ingest.ingest_batch("old", events, now=now)  # e.g. `meter ops replay-failed`
    assert again.accepted == 0
    assert again.rejected == {"timestamp_out_of_window": 3}  # too old to be accepted now
    assert api_calls(RECEIVED) == 6
    assert batches.stats()["accepted"] == before


def test_the_running_totals_survive_pruning_and_ignore_redeliveries(
    db: psycopg.Connection,
) -> None:
    old = arriving(RECEIVED, 3, "old")
    ingest.ingest_batch("old", [], now=RECEIVED)  # a redelivery adds nothing
    shared = event(quantity=1, at=LATER - timedelta(hours=1), event_id="twice")
    ingest.ingest_batch("new", [shared, event(at=LATER - timedelta(hours=1))], now=LATER)
    ingest.ingest_batch("newer", [shared], now=LATER)
    assert old.accepted == 3
    expected = {"accepted": 5, "duplicates": 1}
    assert {k: batches.stats()[k] for k in expected} == expected

    retention.prune(LATER + kept_for() + timedelta(days=1))
    assert rows(db, "ingest_batches") == 0
    assert {k: batches.stats()[k] for k in expected} == expected


def test_past_days_fold_into_one_totals_row_each(db: psycopg.Connection) -> None:
    today = date(2026, 3, 10)
    db.execute(
        "INSERT INTO ingest_totals (day, slot, accepted, duplicates) VALUES"
        " ('2026-03-07', 0, 100, 1), ('2026-03-07', 4242, 5, 0), ('2026-03-07', 4343, 7, 2),"
        " ('2026-03-08', 4242, 11, 0), ('2026-03-09', 4242, 13, 0), ('2026-03-10', 4343, 17, 3)"
    )
    before = batches.stats()
    now = datetime(2026, 3, 10, 4, 15, tzinfo=UTC)
    assert retention.fold_totals(now) == 3  # the 7th's two backend rows and the 8th's
    assert retention.fold_totals(now) == 0
    assert batches.stats() == before
    assert db.execute(
        "SELECT day, slot, accepted, duplicates FROM ingest_totals ORDER BY day, slot"
    ).fetchall() == [
        (date(2026, 3, 7), 0, 112, 3),
        (date(2026, 3, 8), 0, 11, 0),
        (date(2026, 3, 9), 4242, 13, 0),  # yesterday: a late transaction may still add to it
        (today, 4343, 17, 3),
    ]


def test_pruning_is_overdue_when_a_night_was_missed() -> None:
    arriving(RECEIVED, 1, "old")
    due = RECEIVED + kept_for()
    assert not retention.pruning_overdue(due + timedelta(hours=23))
    assert retention.pruning_overdue(due + timedelta(days=1, seconds=1))
    retention.prune(due + timedelta(days=1, seconds=1))
    assert not retention.pruning_overdue(due + timedelta(days=1, seconds=1))


def test_the_nightly_job_runs_the_pruning_actor(
    db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    (job,) = [job for job in JOBS if job.actor == "prune_ingest_history"]
    assert maintenance.prune_ingest_history.actor_name == job.actor
    assert maintenance.prune_ingest_history.queue_name == maintenance.MAINTENANCE_QUEUE
    trigger = job.trigger()
    first = trigger.get_next_fire_time(None, datetime(2026, 3, 1, 12, tzinfo=UTC))
    assert trigger.get_next_fire_time(first, first) - first == timedelta(days=1)
    assert job.catch_up is not None

    now = datetime.now(UTC)  # the actor prunes as of the real now: rows are placed around it
    arriving(now - kept_for() - timedelta(hours=1), 2, "gone")
    arriving(now - timedelta(days=1), 2, "kept")
    assert job.catch_up(now) is False  # overdue only a day after its rows were due
    with caplog.at_level(logging.INFO, logger="meterline.tasks.maintenance"):
        maintenance.prune_ingest_history()
    assert db.execute("SELECT batch_id FROM ingest_batches").fetchall() == [("kept",)]
    assert rows(db, "event_ids") == 2
    assert "2 event id(s), 1 batch claim(s)" in caplog.text


def test_the_migration_carries_the_totals_of_existing_batches(scratch_database: str) -> None:
    backend = get_backend(yoyo_url(scratch_database))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            backend.apply_migrations(
                backend.to_apply(migrations.filter(lambda m: m.id < "0007_ingest_totals"))
            )
    finally:
        backend.connection.close()
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ingest_batches (batch_id, received_at, accepted, duplicates) VALUES"
            " ('a', '2026-03-01 23:00+00', 10, 1), ('b', '2026-03-02 01:00+02', 20, 0),"
            " ('c', '2026-03-02 12:00+00', 5, 4)"
        )
        assert "0007_ingest_totals" in migrate(scratch_database)
        totals = conn.execute(
            "SELECT day, slot, accepted, duplicates FROM ingest_totals ORDER BY day"
        ).fetchall()
    assert totals == [(date(2026, 3, 1), 0, 30, 1), (date(2026, 3, 2), 0, 5, 4)]


def test_a_worker_never_waits_on_another_workers_totals_row(test_servers: Any) -> None:
    """Another backend's ingest transaction is open, its totals row for the day locked: this
    batch still commits (it writes its own backend's row), and both are counted."""
    with psycopg.connect(test_servers.database_url) as other:  # a transaction left open
        other.execute(
            "INSERT INTO ingest_batches (batch_id, received_at) VALUES ('a', %s)", (RECEIVED,)
        )
        outcome = {"accepted": 7, "duplicates": 0, "rejected": 0, "segments": None}
        other.execute(batches.RECORD_OUTCOME, {**outcome, "batch_id": "a"})
        done = threading.Event()
        worker = threading.Thread(target=lambda: (arriving(RECEIVED, 2, "b"), done.set()))
        worker.start()
        worker.join(timeout=60)  # a wait on the other's row would last until it commits
        assert done.is_set()
        other.commit()
    assert batches.stats()["accepted"] == 9
