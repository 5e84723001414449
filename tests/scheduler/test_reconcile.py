"""Reconciliation: drifted counters are found and reloaded from the rollups; rollups that
disagree with the ledger are reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import redis as redis_lib

from services.reconcile import last_reconciled_at, reconcile
from services.usage import current_usage
from storage.catalog.cache import Segment, catalog
from storage.usage import counters, rollups
from tasks.ingest import ingest_events
from tasks.maintenance import reconcile_counters
from tests.metering.helpers import (
    assert_consistent,
    batch,
    event,
    in_previous_period,
    setup_customer,
)


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> None:
    setup_customer()
    ingest_events(batch([event(quantity=3) for _ in range(10)]))
    ingest_events(batch([event("login", properties={"user_id": u}) for u in ("a", "b")]))
    ingest_events(batch([event(quantity=5, at=in_previous_period())]))
    assert_consistent()  # reads (and so hydrates) the counters of both segments
    assert_consistent(at=in_previous_period())


def segment_at(at: datetime) -> Segment:
    context = catalog.customers({"cus_1"})["cus_1"]
    segment = catalog.segment(context, at)
    assert segment is not None
    return segment


def live_counters(segment: Segment) -> counters.SegmentCounters | None:
    """The counters as Redis has them, never rebuilt on the way (unlike `current_usage`)."""
    return counters.read_segment("cus_1", segment.start, ["seats"])


def assert_counters_equal_rollups(segment: Segment) -> None:
    live = live_counters(segment)
    snap = rollups.snapshot("cus_1", segment.start)
    assert live is not None
    assert live.version == snap.version
    assert live.state.metrics == snap.state.metrics
    assert live.unique_counts["seats"] == len(snap.uniques.get("seats", ()))


def corrupt_metric(redis: redis_lib.Redis, segment: Segment, metric: str, **changes: Any) -> None:
    """Overwrite a metric's count and/or total in its counter hash (scaled integer fields)."""
    key = counters.segment_key("cus_1", segment.start)
    mapping = {}
    if "count" in changes:
        mapping[f"n:{metric}"] = str(changes["count"])
    if "total" in changes:
        mapping[f"s:{metric}"] = str(int(Decimal(changes["total"]).scaleb(6)))
    redis.hset(key, mapping=mapping)


@pytest.mark.date_sensitive
def test_consistent_counters_are_checked_and_left_alone() -> None:
    report = reconcile()
    assert report.checked == 2  # the current segment and the previous one
    assert (report.drifted, report.repaired, report.ledger_mismatches) == (0, 0, [])


def test_a_corrupted_counter_is_detected_and_repaired(redis: redis_lib.Redis) -> None:
    now = datetime.now(UTC)
    segment = segment_at(now)
    corrupt_metric(redis, segment, "api_calls", total="1030", count=11)
    assert current_usage("cus_1").metrics["api_calls"].used == Decimal(1030)  # customers see it

    report = reconcile()

    assert (report.checked, report.drifted, report.repaired) == (2, 1, 1)
    assert report.drift == [
        {
            "customer_id": "cus_1",
            "period_start": segment.start.isoformat(),
            "reason": "values",
            "repaired": True,
        }
    ]
    assert_counters_equal_rollups(segment)
    assert current_usage("cus_1").metrics["api_calls"].used == Decimal(30)
    assert reconcile().drifted == 0


def test_a_deleted_counter_hash_is_reloaded(redis: redis_lib.Redis) -> None:
    segment = segment_at(datetime.now(UTC))
    redis.delete(counters.segment_key("cus_1", segment.start))
    assert live_counters(segment) is None

    report = reconcile()

    assert (report.drifted, report.repaired) == (1, 1)
    assert report.drift[0]["reason"] == "missing"
    assert_counters_equal_rollups(segment)  # back in Redis, not merely rebuilt on a read


def test_a_drifted_distinct_value_set_is_repaired(redis: redis_lib.Redis) -> None:
    segment = segment_at(datetime.now(UTC))
    redis.sadd(counters.unique_key("cus_1", segment.start, "seats"), "intruder")
    assert current_usage("cus_1").metrics["seats"].used == 3

    report = reconcile()

    assert report.drift[0]["reason"] == "uniques" and report.repaired == 1
    assert current_usage("cus_1").metrics["seats"].used == 2


@pytest.mark.date_sensitive
def test_the_previous_segment_is_checked_too(redis: redis_lib.Redis) -> None:
    previous = segment_at(in_previous_period())
    corrupt_metric(redis, previous, "api_calls", total="6")

    report = reconcile()

    assert report.drift[0]["period_start"] == previous.start.isoformat()
    assert report.repaired == 1
    assert_counters_equal_rollups(previous)


def test_a_counter_version_ahead_of_the_rollups_is_repaired(redis: redis_lib.Redis) -> None:
    segment = segment_at(datetime.now(UTC))
    redis.hset(counters.segment_key("cus_1", segment.start), "_v", 99)

    report = reconcile()

    assert report.drift[0]["reason"] == "ahead" and report.repaired == 1
    assert_counters_equal_rollups(segment)


def test_check_only_reports_without_repairing(redis: redis_lib.Redis) -> None:
    segment = segment_at(datetime.now(UTC))
    corrupt_metric(redis, segment, "api_calls", total="1")

    report = reconcile(repair=False)

    assert (report.drifted, report.repaired) == (1, 0)
    live = live_counters(segment)
    assert live is not None and live.state.metrics["api_calls"].total == 1


@pytest.mark.date_sensitive
def test_counters_written_by_ingest_alone_are_not_drift(redis: redis_lib.Redis) -> None:
    """Never read by `meter usage`: what ingest left in Redis agrees with the rollups."""
    setup_customer("cus_2")
    ingest_events(batch([event(customer_id="cus_2", quantity=2)]))
    report = reconcile(customer_ids=["cus_2"])
    assert report.checked == 2 and report.drifted == 0


def test_a_rollup_that_differs_from_the_ledger_is_reported(db: psycopg.Connection) -> None:
    segment = segment_at(datetime.now(UTC))
    db.execute(
        "UPDATE usage_rollups SET total = total + 7 WHERE customer_id = 'cus_1'"
        " AND metric = 'api_calls' AND period_start = %s",
        (segment.start,),
    )

    report = reconcile()

    assert report.ledger_mismatches == [
        {
            "customer_id": "cus_1",
            "period_start": segment.start.isoformat(),
            "metric": "api_calls",
            "ledger": {"count": 10, "total": "30", "maximum": "3"},
            "rollup": {"count": 10, "total": "37", "maximum": "3"},
        }
    ]


@pytest.mark.date_sensitive
def test_ledger_rows_missing_from_the_rollups_are_reported(db: psycopg.Connection) -> None:
    at = datetime.now(UTC)  # in the current segment (a minute ago may not be, on the 1st)
    db.execute(
        "INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp)"
        " VALUES ('cus_1', 'sneaked-in', 'api_calls', 4, %s)",
        (at,),
    )
    mismatches = reconcile().ledger_mismatches
    # Both metrics that read api_calls events unfiltered: the sum and the count.
    assert {m["metric"] for m in mismatches} == {"api_calls", "requests"}
    calls = next(m for m in mismatches if m["metric"] == "api_calls")
    assert calls["ledger"] == {"count": 11, "total": "34", "maximum": "4"}
    assert calls["rollup"] == {"count": 10, "total": "30", "maximum": "3"}


def test_the_nightly_actor_runs_over_everyone_and_is_recorded(redis: redis_lib.Redis) -> None:
    segment = segment_at(datetime.now(UTC))
    redis.delete(counters.segment_key("cus_1", segment.start))
    reconcile(customer_ids=["cus_1"])
    assert last_reconciled_at() is None  # a partial run is not the nightly one

    corrupt_metric(redis, segment, "api_calls", total="0")
    before = datetime.now(UTC)
    reconcile_counters()

    assert_counters_equal_rollups(segment)
    finished = last_reconciled_at()
    assert finished is not None and finished >= before


def test_meter_ops_reconcile_prints_the_report(redis: redis_lib.Redis) -> None:
    import typer
    from typer.testing import CliRunner

    from cli.reconcile import reconcile as reconcile_command

    app = typer.Typer()
    app.command()(reconcile_command)
    segment = segment_at(datetime.now(UTC))
    corrupt_metric(redis, segment, "api_calls", total="1")

    checked = CliRunner().invoke(app, ["--check-only", "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["drifted"] == 1
    assert json.loads(CliRunner().invoke(app, ["--json"]).stdout)["repaired"] == 1
    human = CliRunner().invoke(app, [])
    assert "checked 2 segment(s): 0 drifted" in human.stdout
