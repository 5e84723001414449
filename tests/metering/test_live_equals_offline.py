"""The live path equals offline pricing: whatever the events, their order, the batching and
the number of deliveries, the counters (and the rollups) give what `meter quote` computes.

Event times are drawn relative to the current period's start (in the previous period or
between that start and now), so both segments are exercised on every day of the month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import db as storage_db
from storage.ledger import events as ledger
from storage.redis_client import get_redis
from tasks.ingest import ingest_events
from tests.conftest import SessionServers, truncate_application_tables
from tests.hard_days import PinnedClock
from tests.metering.helpers import assert_consistent, batch, period_start, setup_customer

pytestmark = pytest.mark.date_sensitive

quantities = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False)
signed = st.decimals(min_value=-50, max_value=50, places=2, allow_nan=False)
# Where an event lands: (in the previous period?, position in millionths of its span).
positions = st.tuples(st.booleans(), st.integers(min_value=0, max_value=1_000_000))
PREVIOUS_SPAN = timedelta(days=3)  # before the boundary: within the 35-day window on any day


def place(position: tuple[bool, int], boundary: datetime, now: datetime) -> datetime:
    """The instant a drawn position stands for: in the `PREVIOUS_SPAN` before the current
    period's start `boundary`, or in [boundary, now]."""
    previous, millionths = position
    if previous:
        return boundary - timedelta(microseconds=1) - PREVIOUS_SPAN * millionths / 1_000_000
    return boundary + (now - boundary) * millionths / 1_000_000


@st.composite
def an_event(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["api", "storage", "delta", "login", "payment"]))
    at = draw(positions)
    properties: dict[str, Any] = {}
    quantity: Decimal = Decimal(1)
    if kind == "api":
        metric, quantity = "api_calls", draw(quantities)
        properties = {"region": draw(st.sampled_from(["eu", "us"]))}
    elif kind == "storage":
        metric, quantity = "storage", draw(quantities)
    elif kind == "delta":
        metric, quantity = "storage_delta", draw(signed)
    elif kind == "login":
        metric = "login"
        properties = {"user_id": draw(st.sampled_from(["ann", "bob", "cy", "dee", "eve"]))}
    else:
        metric = "payments"
        properties = {"amount": str(draw(st.decimals(min_value=0, max_value=500, places=2)))}
    return {
        "event_id": f"ev{index}",
        "customer_id": "cus_1",
        "metric": metric,
        "quantity": str(quantity),
        "timestamp": at,  # placed by the test, against its clock
        "properties": properties,
    }


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]], list[int]]:
    size = draw(st.integers(min_value=1, max_value=40))
    events = [draw(an_event(i)) for i in range(size)]
    order = draw(st.permutations(range(size)))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=size), max_size=5)))
    chunks, start = [], 0
    for cut in [*cuts, size]:
        if cut > start:
            chunks.append(list(order[start:cut]))
            start = cut
    deliveries = draw(
        st.lists(st.integers(min_value=1, max_value=3), min_size=len(chunks), max_size=len(chunks))
    )
    return events, chunks, deliveries


#: Examples on the real clock, and on each pinned hard day (ten of them: see tests/hard_days.py).
EXAMPLES, EXAMPLES_PER_HARD_DAY = 25, 6


def test_live_usage_equals_offline_pricing(
    test_servers: SessionServers, hard_day: PinnedClock | None
) -> None:
    @settings(
        max_examples=EXAMPLES if hard_day is None else EXAMPLES_PER_HARD_DAY,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(stream=streams())
    def check(stream: tuple[list[dict[str, Any]], list[list[int]], list[int]]) -> None:
        truncate_application_tables(test_servers.database_url)
        get_redis().flushdb()
        storage_db.clear_caches()
        check_stream(stream)

    check()


def check_stream(stream: tuple[list[dict[str, Any]], list[list[int]], list[int]]) -> None:
    setup_customer(starts_days_ago=90)
    now = datetime.now(UTC)
    boundary = period_start(now)
    events = [
        {**e, "timestamp": place(e["timestamp"], boundary, now).isoformat()} for e in stream[0]
    ]
    _, chunks, deliveries = stream
    for n, (chunk, times) in enumerate(zip(chunks, deliveries, strict=True)):
        message = batch([events[i] for i in chunk], batch_id=f"batch{n}")
        for _ in range(times):
            ingest_events(message)
    # Every event is in the ledger once, whatever the deliveries.
    assert ledger.count_events("cus_1", boundary - PREVIOUS_SPAN * 2, now + timedelta(1)) == len(
        events
    )
    # Both segments; the counters of one that received events must be live in Redis.
    in_previous = [e["timestamp"][0] for e in stream[0]]
    assert_consistent(at=now, require_live=not all(in_previous))
    assert_consistent(at=boundary - timedelta(microseconds=1), require_live=any(in_previous))
