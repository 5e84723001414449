"""Usage thresholds fired inline by ingest: once per customer × metric × threshold × period,
each in order, with its outbox row written in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pricing.periods import billing_period
from services import alerts as alert_service
from storage import db
from tests.alerts.helpers import (
    PLAN,
    D,
    alert_rows,
    calls,
    fired,
    outbox_count,
    send,
    setup_customer,
)

USAGE = "usage"


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> str:
    return setup_customer()


def test_thresholds_crossed_one_by_one() -> None:
    send(calls(7999))
    assert fired() == []
    send(calls(1))  # exactly 80 % of 10,000
    assert fired() == [(USAGE, "api_calls", D("0.8"))]
    send(calls(1000))  # 9,000: nothing new
    send(calls(499))  # 9,499
    assert len(fired()) == 1
    send(calls(1))  # 9,500: 95 %
    send(calls(700))  # 10,200: 100 %
    assert fired() == [
        (USAGE, "api_calls", D("0.8")),
        (USAGE, "api_calls", D("0.95")),
        (USAGE, "api_calls", D("1")),
    ]
    send(calls(5000))
    assert len(fired()) == 3 and outbox_count() == 3


def test_thresholds_jumped_at_once_fire_each_in_order() -> None:
    send(calls(10200))
    rows = alert_rows()
    assert [r["threshold"] for r in rows] == [D("0.8"), D("0.95"), D("1")]
    assert [r["outbox_id"] for r in rows] == sorted(r["outbox_id"] for r in rows)
    assert all(r["topic"] == "usage.threshold_reached" for r in rows)


def test_the_outbox_payload_says_what_was_reached() -> None:
    send(calls(8000))
    (row,) = alert_rows()
    payload = row["payload"]
    period = billing_period(datetime.now(UTC))
    assert payload == {
        "idempotency_key": f"alert:cus_a:usage:api_calls:0.8:10000:{period.start.isoformat()}",
        "type": "usage.threshold_reached",
        "alert_id": row["id"],
        "customer_id": "cus_a",
        "plan": "metered",
        "metric": "api_calls",
        "kind": "usage",
        "threshold": "0.8",
        "threshold_label": "80%",
        "used": "8000",
        "included": "10000",
        "limit": None,
        "period": {
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "label": period.label,
        },
        "estimated_bill": "0.00",
        "currency": "USD",
        "triggered_at": payload["triggered_at"],
    }


def test_metric_thresholds_and_metrics_without_included_usage() -> None:
    """storage_gb watches only 50 % (its own `alerts`); logins has nothing included: no rule."""
    send(calls(60, metric="storage_gb"), calls(1_000_000, metric="logins"))
    assert fired() == [(USAGE, "storage_gb", D("0.5"))]
    assert alert_rows()[0]["basis"] == D(100)


def test_alerts_off_in_the_plan() -> None:
    setup_customer("cus_off", PLAN.replace("code: metered", "code: quiet") + "alerts: []\n")
    send(calls(20000, customer_id="cus_off"), calls(90, customer_id="cus_off", metric="storage_gb"))
    assert fired("cus_off") == [(USAGE, "storage_gb", D("0.5"))]  # its own list still applies


@pytest.mark.parametrize("deliveries", [2, 3])
def test_a_redelivered_batch_fires_once(deliveries: int) -> None:
    message = [calls(9600)]
    batch_id = "redelivered"
    for _ in range(deliveries):
        send(*message, batch_id=batch_id)
        alert_service._fired.clear()  # as if another worker process got the redelivery
    assert fired() == [(USAGE, "api_calls", D("0.8")), (USAGE, "api_calls", D("0.95"))]
    assert outbox_count() == 2


def test_two_workers_crossing_the_same_threshold_write_one_alert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both see 80 % reached, neither knows of the other's alert; they write at the same
    moment, and the unique key lets only one commit an alert (and its outbox row)."""
    import threading

    from storage import alerts as store

    send(calls(7000))
    arrived = threading.Barrier(2, timeout=20)
    record = store.record

    def record_together(conn: db.Connection, new: list[store.NewAlert]) -> object:
        arrived.wait()
        return record(conn, new)

    monkeypatch.setattr(store, "record", record_together)
    errors: list[BaseException] = []

    def worker(quantity: int) -> None:
        try:
            send(calls(quantity))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(q,)) for q in (1100, 1200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert fired() == [(USAGE, "api_calls", D("0.8"))]
    assert outbox_count() == 1


@pytest.mark.date_sensitive
def test_a_new_period_fires_again() -> None:
    """8,000 calls an hour before the period began, then 8,000 now: two 80 % alerts, one per
    period (dates from the period boundary, so any day of the month works)."""
    now = datetime.now(UTC)
    current = billing_period(now)
    send(calls(8000, at=current.start - timedelta(hours=1)))
    send(calls(7999, at=now))
    rows = alert_rows()
    assert [(r["threshold"], r["period_start"]) for r in rows] == [
        (D("0.8"), billing_period(current.start - timedelta(hours=1)).start)
    ]
    send(calls(1, at=now))
    rows = alert_rows()
    assert [(r["threshold"], r["period_start"]) for r in rows] == [
        (D("0.8"), billing_period(current.start - timedelta(hours=1)).start),
        (D("0.8"), current.start),
    ]


def test_a_hard_limit_reached_exactly_at_the_boundary() -> None:
    """used == hard_limit is the limit reached (one more unit would not be allowed):
    `limit.reached` once per period, and the usage past it is still recorded."""
    setup_customer(
        "cus_l",
        PLAN.replace("code: metered", "code: capped")
        + "alerts: []\nlimits: {api_calls: {hard_limit: 12000}}\n",
    )
    send(calls(11999, customer_id="cus_l"))
    assert [r for r in fired("cus_l") if r[0] == "limit"] == []
    send(calls(1, customer_id="cus_l"))
    rows = [r for r in alert_rows("cus_l") if r["kind"] == "limit"]
    assert [(r["threshold"], r["topic"]) for r in rows] == [(D(12000), "limit.reached")]
    assert rows[0]["payload"]["limit"] == "12000" and rows[0]["payload"]["used"] == "12000"
    send(calls(500, customer_id="cus_l"))
    assert len([r for r in fired("cus_l") if r[0] == "limit"]) == 1
    from services.usage import current_usage

    assert current_usage("cus_l").metrics["api_calls"].used == D(12500)
