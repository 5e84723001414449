"""Property: a batch of arbitrary JSON junk mixed with valid events, through Dramatiq's JSON
encoding and the real ingest actor on PostgreSQL and Redis, counts every valid event exactly
once and rejects every other one with a reason."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.periods import billing_period
from pricing.plans import load_plan
from services.customers import create_customer
from storage import db
from storage.catalog.plans import apply_plan
from tasks.ingest import ingest_events
from tests.metering.helpers import PLAN, assert_consistent, event
from tests.metering.test_bad_events import over_the_wire

# Every character, NUL and lone surrogates included: what a JSON decoder can hand the worker.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
BAD_CHAR = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=12,
)
NOT_SCALAR = st.lists(JSON, max_size=3) | st.dictionaries(ANY_TEXT, JSON, max_size=3)


@st.composite
def unstorable_text(draw: st.DrawFn) -> str:
    return draw(ANY_TEXT) + draw(BAD_CHAR) + draw(ANY_TEXT)


BAD_IDS = (
    unstorable_text()
    | st.just("")
    | st.just("x" * 129)
    | st.integers()
    | st.booleans()
    | st.none()
    | NOT_SCALAR
)
BAD_QUANTITIES = (
    st.sampled_from(
        [
            *("1e999999999", "-1e999999999", "1e-999999999", "NaN", "Infinity", "-Infinity"),
            *("1e18", "-1e18", "0.0000001", "abc", "", "-1", "1e99999999999999999999"),
        ]
    )
    | st.integers(min_value=10**18)
    | st.sampled_from([float("nan"), float("inf"), 1e300])
    | st.booleans()
    | st.none()
    | NOT_SCALAR
)
BAD_TIMESTAMPS = (
    st.sampled_from(
        [
            *("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-27T10:00:00"),
            *("not a time", "", "2000-01-01T00:00:00+00:00", "2999-01-01T00:00:00Z"),
        ]
    )
    | unstorable_text()
    | st.booleans()
    | st.none()
    | NOT_SCALAR
)
BAD_PROPERTIES = (
    st.builds(lambda t: {"note": t}, unstorable_text())
    | st.builds(lambda t: {t: 1}, unstorable_text())
    | st.just({"n": 10**600})
    | st.builds(lambda v: {"x": v}, NOT_SCALAR | st.none())
    | st.lists(JSON, max_size=3)
    | SCALARS.filter(lambda v: v is not None)  # None is refused too, but drawn above
)
# Event names the test plan reads without any property: a known customer sending one of these
# with a valid shape would be accepted, so a "wrong metric" is drawn outside them.
PLAN_EVENT_NAMES = {"api_calls", "storage", "storage_delta", "login", "payments"}


@st.composite
def junk(draw: st.DrawFn, template: dict[str, Any]) -> Any:
    """Something that is not a valid event of this customer, whatever its shape."""
    kind = draw(st.sampled_from(["value", "object", "field", "missing", "customer", "metric"]))
    if kind == "value":
        return draw(JSON.filter(lambda v: not isinstance(v, dict)))
    if kind == "object":  # an unknown key makes any object invalid
        return {**draw(st.dictionaries(ANY_TEXT, JSON, max_size=4)), "junk": draw(JSON)}
    if kind == "missing":
        key = draw(st.sampled_from(["event_id", "customer_id", "metric", "timestamp"]))
        return {k: v for k, v in template.items() if k != key}
    if kind == "customer":  # a text: unknown or invalid
        known = template["customer_id"]
        return {**template, "customer_id": draw(ANY_TEXT.filter(lambda t: t != known))}
    if kind == "metric":
        return {**template, "metric": draw(ANY_TEXT.filter(lambda t: t not in PLAN_EVENT_NAMES))}
    field, values = draw(
        st.sampled_from(
            [
                ("event_id", BAD_IDS),
                ("customer_id", BAD_IDS),
                ("metric", BAD_IDS),
                ("quantity", BAD_QUANTITIES),
                ("timestamp", BAD_TIMESTAMPS),
                ("properties", BAD_PROPERTIES),
            ]
        )
    )
    return {**template, field: draw(values)}


_customers = itertools.count()


@st.composite
def mixed_batches(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[Decimal], int]:
    """(customer, batch, quantities of its valid events, number of junk events)."""
    customer = f"prop_{next(_customers)}"
    quantities = draw(
        st.lists(st.decimals(min_value=0, max_value=10**6, places=3), min_size=0, max_size=8)
    )
    valid = [
        event(quantity=q, customer_id=customer, event_id=f"{customer}-v{i}")
        for i, q in enumerate(quantities)
    ]
    bad = [
        draw(junk(event(customer_id=customer, event_id=f"{customer}-j{i}")))
        for i in range(draw(st.integers(1, 6)))
    ]
    events = draw(st.permutations(valid + bad))
    return customer, {"batch_id": f"{customer}-batch", "events": events}, quantities, len(bad)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mixed_batches())
def test_junk_never_stops_the_valid_events_of_its_batch(
    clean_state: None, case: tuple[str, dict[str, Any], list[Decimal], int]
) -> None:
    customer, message, quantities, junk_count = case
    apply_plan(load_plan(PLAN))  # stores it once; later examples find the same content
    now = datetime.now(UTC)
    create_customer(customer, "live", starts_at=billing_period(now).start)
    ingest_events(over_the_wire(message))
    with db.connection() as conn:
        accepted, duplicates, rejected = conn.execute(
            "SELECT accepted, duplicates, rejected FROM ingest_batches WHERE batch_id = %s",
            (message["batch_id"],),
        ).fetchone()
        reasons = conn.execute(
            "SELECT reason, detail FROM rejected_events WHERE batch_id = %s",
            (message["batch_id"],),
        ).fetchall()
    assert (accepted, duplicates, rejected) == (len(quantities), 0, junk_count)
    assert len(reasons) == junk_count and all(reason and detail for reason, detail in reasons)
    counted = assert_consistent(customer, now, require_live=bool(quantities))
    assert counted["api_calls"] == sum(quantities, Decimal(0))
