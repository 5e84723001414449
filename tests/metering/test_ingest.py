"""Ingest: every accepted event counted exactly once in ledger, rollups and counters."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services import ingest
from storage.catalog.cache import catalog
from storage.ledger import batches, retention
from storage.ledger import events as ledger
from storage.usage.counters import segment_key
from tasks.ingest import ingest_events
from tests.metering.helpers import (
    assert_consistent,
    batch,
    event,
    in_previous_period,
    period_start,
    setup_customer,
)


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> None:
    setup_customer()


def test_batch_lands_in_ledger_rollups_and_counters() -> None:
    events = [event(quantity=3) for _ in range(10)]
    events += [event("storage", quantity=q) for q in (4, 9, 2)]
    events += [event("login", properties={"user_id": u}) for u in ("a", "b", "a", "c")]
    events += [event("payments", properties={"amount": a}) for a in ("50", "80", "200.5")]
    ingest_events(batch(events))
    quantities = assert_consistent()
    assert quantities["api_calls"] == 30
    assert quantities["requests"] == 10
    assert quantities["peak_gb"] == 9
    assert quantities["disk"] == 2
    assert quantities["seats"] == 3
    assert quantities["payments"] == Decimal("330.5")
    assert batches.stats()["accepted"] == len(events)


@pytest.mark.parametrize("deliveries", [2, 3, 5])
def test_duplicate_delivery_of_the_same_batch_counts_once(deliveries: int) -> None:
    message = batch([event(quantity=7) for _ in range(20)])
    for _ in range(deliveries):
        ingest_events(message)
    assert assert_consistent()["api_calls"] == 140
    stats = batches.stats()
    assert stats["accepted"] == 20 and stats["duplicates"] == 0


def test_the_same_event_in_two_batches_is_a_duplicate_not_an_error() -> None:
    shared = event(quantity=5, event_id="dup-1")
    ingest_events(batch([shared, event(quantity=1)]))
    ingest_events(batch([shared, event(quantity=2)]))
    assert assert_consistent()["api_calls"] == 8
    assert batches.stats()["duplicates"] == 1


@pytest.mark.date_sensitive
def test_a_resend_with_another_timestamp_is_still_a_duplicate() -> None:
    first = event(quantity=5, event_id="same-id")
    later = dict(first, timestamp=(datetime.now(UTC) - timedelta(days=3)).isoformat())
    ingest_events(batch([first]))
    ingest_events(batch([later]))
    assert assert_consistent()["api_calls"] == 5


@pytest.mark.date_sensitive
def test_a_batch_with_known_events_keeps_its_new_events_and_rejections(db) -> None:  # type: ignore[no-untyped-def]
    """The batch's statement assumes every event is new; a known one sends it back to the
    savepoint and the statement that skips known events. What went before the savepoint (the
    rejections) stays, and the new events of the batch count once. Eight rounds: the pipeline
    recovers every time, also once both statements are prepared (psycopg prepares a query
    from its fifth execution)."""
    first = [event(quantity=5, event_id=f"known-{n}") for n in range(8)]
    ingest_events(batch(first))
    earlier = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    for n in range(8):
        resend = dict(first[n], timestamp=earlier)  # another timestamp: still a duplicate
        fresh = [event(quantity=1), event("login", properties={"user_id": f"u{n}"})]
        ingest_events(batch([event(customer_id="nobody"), resend, *fresh]))
    quantities = assert_consistent()
    assert quantities["api_calls"] == 8 * 5 + 8
    assert quantities["seats"] == 8
    stats = batches.stats()
    assert stats["accepted"] == 8 + 8 * 2 and stats["duplicates"] == 8
    assert db.execute("SELECT count(*) FROM rejected_events").fetchone()[0] == 8
    assert ledger.count_events("cus_1", period_start(), period_start() + timedelta(days=62)) == 24


def test_a_repeat_inside_one_batch_counts_once() -> None:
    one = event(quantity=4, event_id="twice")
    ingest_events(batch([one, one, event(quantity=1)]))
    assert assert_consistent()["api_calls"] == 5
    assert batches.stats()["duplicates"] == 1


def test_counters_missed_after_commit_converge_on_redelivery() -> None:
    """The worker dies after the PostgreSQL commit, before the Redis write."""
    message = batch([event(quantity=2) for _ in range(5)])
    ingest.ingest_batch(message["batch_id"], message["events"])  # committed, counters not applied
    ingest_events(batch([event(quantity=1)]))  # a later batch leaves a version gap in Redis
    ingest_events(message)  # redelivery: applies the stored deltas, fills the gap
    assert assert_consistent()["api_calls"] == 11


def test_a_gap_never_filled_is_repaired_from_the_rollups_on_read() -> None:
    message = batch([event(quantity=2) for _ in range(5)])
    ingest.ingest_batch(message["batch_id"], message["events"])
    ingest_events(batch([event(quantity=1)]))
    assert assert_consistent(require_live=False)["api_calls"] == 11


def test_redis_flushed_mid_stream(redis) -> None:  # type: ignore[no-untyped-def]
    ingest_events(batch([event(quantity=1) for _ in range(10)]))
    assert_consistent()
    redis.flushdb()
    ingest_events(batch([event(quantity=1) for _ in range(10)]))
    ingest_events(batch([event("login", properties={"user_id": "z"})]))
    assert assert_consistent()["api_calls"] == 20
    redis.flushdb()
    assert assert_consistent(require_live=False)["seats"] == 1  # the read rebuilds them
    assert assert_consistent()["seats"] == 1


def test_counter_hash_carries_the_customer_hash_tag() -> None:
    assert segment_key("cus_1", datetime(2026, 11, 1, tzinfo=UTC)).startswith("ml:{cus_1}:")


@pytest.mark.date_sensitive
def test_rejected_events_are_recorded_with_their_reason(db) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    bad = [
        event(customer_id="nobody"),
        event("no_such_metric"),
        {**event(), "quantity": math.nan},
        {**event(), "quantity": "Infinity"},
        {**event(), "quantity": "1e40"},
        {**event(), "quantity": "0.0000001"},
        event(quantity=-1),
        event(at=now - timedelta(days=40)),
        event(at=now + timedelta(hours=1)),
        event("login", properties={"x": "y"}),
        event(properties={f"k{i}": i for i in range(60)}),
        event(properties={"big": "x" * 5000}),
        {**event(), "timestamp": "2026-11-27T10:00:00"},
        {"customer_id": "cus_1"},
        "not an event",
    ]
    ingest_events(batch([*bad, event(quantity=5)]))
    reasons = [
        r[0] for r in db.execute("SELECT reason FROM rejected_events ORDER BY id").fetchall()
    ]
    assert len(reasons) == len(bad)
    assert reasons.count("unknown_customer") == 1
    assert reasons.count("unknown_metric") == 1
    assert reasons.count("negative_quantity") == 1
    assert reasons.count("timestamp_out_of_window") == 2
    assert reasons.count("invalid_value") == 1
    assert reasons.count("invalid_event") == 9
    details = [r[0] for r in db.execute("SELECT detail FROM rejected_events").fetchall()]
    assert any(d.startswith("quantity") for d in details)
    assert any("properties" in d for d in details)
    assert any(d.startswith("timestamp") for d in details)
    assert assert_consistent()["api_calls"] == 5
    assert sum(batches.stats()["rejected"].values()) == len(bad)


def test_a_malformed_batch_is_kept_whole(db) -> None:  # type: ignore[no-untyped-def]
    ingest_events({"no": "events"})
    (payload,) = db.execute("SELECT payload FROM failed_batches").fetchone()
    assert json.loads(payload) == {"no": "events"}


@pytest.mark.date_sensitive
def test_the_accepted_window_is_35_days_back_and_5_minutes_ahead_of_now(db) -> None:  # type: ignore[no-untyped-def]
    """Judged against the ingest's own now. Thirty-five days back is always an earlier period
    (two back, after a short month); five minutes ahead may be the next one (31 December,
    23:59:59)."""
    now = datetime.now(UTC)
    margin = timedelta(minutes=1)  # the actor reads the clock a moment after this test
    oldest, newest = now - timedelta(days=35) + margin, now + timedelta(minutes=5) - margin
    ingest_events(
        batch(
            [
                event(quantity=1, at=oldest),
                event(quantity=10, at=newest),
                event(quantity=100, at=oldest - 2 * margin),
                event(quantity=1000, at=newest + 2 * margin),
            ]
        )
    )
    reasons = [r[0] for r in db.execute("SELECT reason FROM rejected_events").fetchall()]
    assert reasons == ["timestamp_out_of_window"] * 2
    assert assert_consistent(at=oldest)["api_calls"] == 1
    assert assert_consistent(at=newest)["api_calls"] == 10


@pytest.mark.date_sensitive
def test_usage_in_an_earlier_month_goes_to_its_own_segment(
    invoice_refreshes: list[tuple[str, datetime]],
) -> None:
    now = datetime.now(UTC)
    earlier = in_previous_period(now)
    ingest_events(batch([event(quantity=4, at=earlier), event(quantity=6)]))
    # Late usage for an ended period asks for its invoice to be refreshed; current usage not.
    segment = catalog.segment(catalog.customers({"cus_1"})["cus_1"], earlier)
    assert segment is not None and segment.end == period_start(now)
    assert invoice_refreshes == [("cus_1", segment.start)]
    assert assert_consistent()["api_calls"] == 6
    assert assert_consistent(at=earlier)["api_calls"] == 4
    assert ledger.count_events("cus_1", earlier - timedelta(days=1), now + timedelta(days=1)) == 2


def test_a_gap_in_hydrated_counters_is_never_read_as_current() -> None:
    ingest_events(batch([event(quantity=1)]))
    assert_consistent()  # counters hydrated at version 1
    lost = batch([event(quantity=10)])
    ingest.ingest_batch(lost["batch_id"], lost["events"])  # version 2: Redis write lost
    ingest_events(batch([event(quantity=100)]))  # version 3 waits behind the gap
    assert assert_consistent(require_live=False)["api_calls"] == 111
    ingest_events(lost)  # the redelivery changes nothing more
    assert assert_consistent()["api_calls"] == 111


def test_check_limit_reads_the_live_counters() -> None:
    from services.limit_snapshot import refresh_snapshots
    from tasks import check_limit

    ingest_events(batch([event("storage", quantity=3)]))
    limit = check_limit("cus_1", "peak_gb")
    assert (limit.used, limit.included, limit.remaining, limit.exceeded) == (3, 5, 2, False)
    ingest_events(batch([event("storage", quantity=8)]))
    refresh_snapshots()  # a batch ingested elsewhere counts from the next refresh on
    assert check_limit("cus_1", "peak_gb").exceeded
    with pytest.raises(KeyError, match="metric"):
        check_limit("cus_1", "nope")


@pytest.mark.date_sensitive
def test_dedup_index_keeps_every_id_still_inside_the_accepted_window() -> None:
    now = datetime.now(UTC)
    old = event(quantity=1, at=now - timedelta(days=34), event_id="old")
    ingest_events(batch([old, event(quantity=1, event_id="new")]))
    assert retention.prune_dedup_index(now) == 0  # 34 days old: still resendable, still known
    ingest_events(batch([old]))
    assert assert_consistent(at=now - timedelta(days=34))["api_calls"] == 1
    assert retention.prune_dedup_index(now + timedelta(days=36)) == 0  # received today: kept
    assert retention.prune_dedup_index(now + timedelta(days=37)) == 2  # out of any window


@pytest.mark.date_sensitive
def test_the_estimate_prorates_the_base_fee_like_the_invoice() -> None:
    from decimal import ROUND_HALF_UP

    from pricing.periods import billing_period
    from services.customers import create_customer
    from services.usage import current_usage

    now = datetime.now(UTC)
    period = billing_period(now)
    started = period.start + (now - period.start) / 2  # mid-period, in UTC
    create_customer("cus_new", "live", starts_at=started)
    report = current_usage("cus_new")
    days = (period.end.date() - started.date()).days
    period_days = (period.end.date() - period.start.date()).days
    expected = (Decimal("10.00") * days / period_days).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert report.estimated_total == expected
    assert report.to_json()["estimated_total"] == str(expected)


def test_a_batch_whose_retries_run_out_is_kept_whole(db) -> None:  # type: ignore[no-untyped-def]
    from tasks.ingest import ingest_failed

    message = batch([event(quantity=3)])
    assert ingest_events.options["on_retry_exhausted"] == ingest_failed.actor_name
    ingest_failed({"args": [message], "kwargs": {}}, {"retries": 20, "last_error": "boom"})
    batch_id, payload, error = db.execute(
        "SELECT batch_id, payload, error FROM failed_batches"
    ).fetchone()
    assert (batch_id, json.loads(payload), error) == (message["batch_id"], message, "boom")


def test_a_kept_batch_is_replayed_once_and_counted_once(db) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cli.main import app
    from tasks.ingest import ingest_failed

    message = batch([event(quantity=4), event(quantity=5)])
    ingest_failed({"args": [message]}, {"last_error": "database was down"})
    ingest_failed({"args": ["garbage"]}, {"last_error": "malformed"})
    runner = CliRunner()
    result = runner.invoke(app, ["ops", "replay-failed", "--inline", "--json"])
    assert result.exit_code == 0, result.output
    assert assert_consistent()["api_calls"] == 9
    again = runner.invoke(app, ["ops", "replay-failed", "--inline", "--json"])
    assert '"replayed": []' in again.output
    assert assert_consistent()["api_calls"] == 9
