"""The live path equals offline pricing: whatever the events, their order, the batching and
the number of deliveries, the counters (and the rollups) give what `meter quote` computes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import db as storage_db
from storage import ledger
from storage.redis_client import get_redis
from tasks.ingest import ingest_events
from tests.conftest import SessionServers, truncate_application_tables
from tests.metering.helpers import assert_consistent, batch, setup_customer

NOW = datetime.now(UTC)

quantities = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False)
signed = st.decimals(min_value=-50, max_value=50, places=2, allow_nan=False)
offsets = st.integers(min_value=0, max_value=20 * 86400)  # seconds before now


@st.composite
def an_event(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["api", "storage", "delta", "login", "payment"]))
    at = NOW - timedelta(seconds=draw(offsets))
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
        "timestamp": at.isoformat(),
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


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams())
def test_live_usage_equals_offline_pricing(
    test_servers: SessionServers,
    stream: tuple[list[dict[str, Any]], list[list[int]], list[int]],
) -> None:
    truncate_application_tables(test_servers.database_url)
    get_redis().flushdb()
    storage_db.clear_caches()
    setup_customer(starts_days_ago=90)
    events, chunks, deliveries = stream
    for n, (chunk, times) in enumerate(zip(chunks, deliveries, strict=True)):
        message = batch([events[i] for i in chunk], batch_id=f"batch{n}")
        for _ in range(times):
            ingest_events(message)
    # Every event is in the ledger once, whatever the deliveries.
    assert ledger.count_events("cus_1", NOW - timedelta(days=90), NOW + timedelta(1)) == len(events)
    # Some events may fall in the previous billing period: check both segments.
    assert_consistent()
    assert_consistent(at=NOW - timedelta(days=20))
