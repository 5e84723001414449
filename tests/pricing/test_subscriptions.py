"""Subscription spans cut into segments, with no database: which plan is in force at an
instant, and the pieces of a period around a plan change, a start and an end (local time)."""

from __future__ import annotations

from datetime import UTC, datetime

from pricing.periods import billing_period
from pricing.plans import Plan, load_plan
from pricing.subscriptions import CustomerContext, SubscriptionSpan, segment_at, segments_of

PLANS = {
    code: load_plan({"code": code, "name": code, "currency": "USD", "interval": "month"})
    for code in ("basic", "pro")
}
VERSIONS = {"basic": 3, "pro": 7}
ZONE = "Europe/Paris"


def plan_of(code: str) -> tuple[Plan, int]:
    return PLANS[code], VERSIONS[code]


def paris(month: int, day: int) -> datetime:
    """Local midnight in Paris on 2026-month-day, as an aware UTC instant."""
    from zoneinfo import ZoneInfo

    return datetime(2026, month, day, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


CHANGE = paris(3, 10)
CONTEXT = CustomerContext(
    customer_id="cus_1",
    timezone=ZONE,
    anchor_day=None,
    starts_at=paris(2, 15),
    ends_at=paris(4, 20),
    spans=(
        SubscriptionSpan("basic", paris(2, 15), CHANGE),
        SubscriptionSpan("pro", CHANGE, None),
    ),
)


def test_a_plan_change_cuts_the_period_at_the_change() -> None:
    march = billing_period(paris(3, 5), timezone=ZONE)
    found = segments_of(CONTEXT, march, plan_of)
    assert [(s.plan.code, s.plan_version, s.start, s.end) for s in found] == [
        ("basic", 3, march.start, CHANGE),
        ("pro", 7, CHANGE, march.end),
    ]
    assert march.start == paris(3, 1) and march.end == paris(4, 1)


def test_the_first_and_last_periods_start_and_end_with_the_customer() -> None:
    february = billing_period(paris(2, 20), timezone=ZONE)
    april = billing_period(paris(4, 5), timezone=ZONE)
    assert [(s.start, s.end) for s in segments_of(CONTEXT, february, plan_of)] == [
        (paris(2, 15), paris(3, 1))
    ]
    assert [(s.start, s.end) for s in segments_of(CONTEXT, april, plan_of)] == [
        (paris(4, 1), paris(4, 20))
    ]


def test_the_segment_at_an_instant_is_the_plan_in_force_then() -> None:
    before = segment_at(CONTEXT, paris(3, 9), plan_of)
    assert before is not None and before.plan.code == "basic" and before.end == CHANGE
    at_change = segment_at(CONTEXT, CHANGE, plan_of)
    assert at_change is not None and at_change.plan.code == "pro" and at_change.start == CHANGE
    assert segment_at(CONTEXT, paris(2, 14), plan_of) is None  # before the customer started
    assert segment_at(CONTEXT, paris(4, 20), plan_of) is None  # the end is exclusive
