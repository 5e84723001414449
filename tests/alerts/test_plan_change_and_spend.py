"""A mid-period plan change keeps the period's alerts; a larger allowance fires its own.
Spend thresholds against the estimated bill priced as `meter usage` prices it (tiers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from pricing.periods import billing_period
from pricing.plans import load_plan
from services.customers import change_plan
from services.usage import current_usage
from storage.catalog.plans import apply_plan
from tests.alerts.helpers import D, alert_rows, calls, fired, plan_text, send, setup_customer


@pytest.fixture
def last_period(clean_state: None) -> Iterator[datetime]:
    """The start of the previous billing period: the test travels through it (its end has
    passed, so nothing it writes is in the future for Redis or PostgreSQL)."""
    yield billing_period(billing_period(datetime.now(UTC)).start - timedelta(hours=1)).start


def _at(moment: datetime) -> time_machine.travel:
    return time_machine.travel(moment, tick=False)


def test_a_plan_change_with_the_same_allowance_keeps_the_period_alerts(
    last_period: datetime,
) -> None:
    setup_customer("cus_p", plan_text("plan_a"), starts_at=last_period - timedelta(days=60))
    apply_plan(load_plan(plan_text("plan_b", price="0.02")))  # dearer, same 10,000 free
    with _at(last_period + timedelta(days=2)):
        send(calls(8500, customer_id="cus_p"))
    with _at(last_period + timedelta(days=5)):
        change_plan("cus_p", "plan_b", last_period + timedelta(days=5))
    with _at(last_period + timedelta(days=8)):
        send(calls(8500, customer_id="cus_p"))  # the new segment's own 85 %
        assert current_usage("cus_p").segment.plan.code == "plan_b"
    assert fired("cus_p") == [("usage", "api_calls", D("0.8"))]
    with _at(last_period + timedelta(days=9)):
        send(calls(1000, customer_id="cus_p"))  # 95 % in the new segment: not fired before
    assert fired("cus_p") == [("usage", "api_calls", D("0.8")), ("usage", "api_calls", D("0.95"))]
    assert {r["period_start"] for r in alert_rows("cus_p")} == {last_period}


def test_a_larger_allowance_fires_its_own_thresholds(last_period: datetime) -> None:
    setup_customer("cus_g", plan_text("small"), starts_at=last_period - timedelta(days=60))
    apply_plan(load_plan(plan_text("large", free=20000)))
    with _at(last_period + timedelta(days=2)):
        send(calls(8500, customer_id="cus_g"))
    with _at(last_period + timedelta(days=5)):
        change_plan("cus_g", "large", last_period + timedelta(days=5))
    with _at(last_period + timedelta(days=8)):
        send(calls(15999, customer_id="cus_g"))
        assert len(alert_rows("cus_g")) == 1
        send(calls(1, customer_id="cus_g"))  # 16,000 = 80 % of the new 20,000
    rows = alert_rows("cus_g")
    assert [(r["threshold"], r["basis"]) for r in rows] == [
        (D("0.8"), D(10000)),
        (D("0.8"), D(20000)),
    ]
    assert rows[1]["payload"]["plan"] == "large"


SPEND = plan_text("spendy", extra='spend_alerts: ["50.00", "100.00", "500.00"]\nalerts: []\n')


def test_spend_thresholds_follow_the_tiers(clean_state: None) -> None:
    """10,000 free, then 0.01 a call: 50.00 at 15,000 calls, 100.00 at 20,000, 500.00 at
    60,000; the estimated bill in the payload is the one `meter usage` shows."""
    setup_customer("cus_s", SPEND)
    send(calls(14999, customer_id="cus_s"))
    assert fired("cus_s") == []
    send(calls(1, customer_id="cus_s"))
    assert fired("cus_s") == [("spend", None, D("50.00"))]
    send(calls(45000, customer_id="cus_s"))  # 60,000 calls: 500.00, both at once
    rows = alert_rows("cus_s")
    assert [(r["threshold"], r["topic"]) for r in rows] == [
        (D("50.00"), "spend.threshold_reached"),
        (D("100.00"), "spend.threshold_reached"),
        (D("500.00"), "spend.threshold_reached"),
    ]
    assert rows[0]["payload"]["estimated_bill"] == "50.00"
    assert rows[2]["payload"]["estimated_bill"] == "500.00"
    assert rows[2]["payload"]["metric"] is None
    assert current_usage("cus_s").estimated_total == D("500.00")


def test_spend_thresholds_past_the_second_tier(clean_state: None) -> None:
    """Past 100,000 calls a call costs 0.005, and the bill is compared as `meter usage` shows
    it, rounded: 119,998 calls cost 999.99, 119,999 cost 999.995, shown as 1000.00."""
    setup_customer("cus_t", plan_text("tiers", extra='spend_alerts: ["1000"]\nalerts: []\n'))
    send(calls(119998, customer_id="cus_t"))
    assert fired("cus_t") == []
    send(calls(1, customer_id="cus_t"))
    assert fired("cus_t") == [("spend", None, D(1000))]
