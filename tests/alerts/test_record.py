"""How an alert and its outbox rows are written (`storage.alerts.record`): the alert takes its
global outbox row's id from the outbox's sequence up front, in the alert's own insert."""

from __future__ import annotations

from services.alerts import _fired
from storage import db
from storage.catalog.webhooks import set_webhook
from tests.alerts.helpers import D, alert_rows, calls, outbox_count, send, setup_customer


def _outbox(customer_id: str) -> list[tuple[int, str, int]]:
    """(id, endpoint, payload's alert_id) of the customer's outbox rows, by id."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, endpoint, (payload->>'alert_id')::bigint FROM outbox"
            " WHERE customer_id = %s ORDER BY id",
            (customer_id,),
        ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def test_alerts_point_at_their_global_rows_with_a_customer_endpoint(clean_state: None) -> None:
    setup_customer("cus_w")
    set_webhook("cus_w", "http://127.0.0.1:9/hook", "s3cret")
    setup_customer("cus_x")
    send(calls(9600, customer_id="cus_w"), calls(8100, customer_id="cus_x"))
    alerts = alert_rows()
    assert [(a["customer_id"], a["threshold"]) for a in alerts] == [
        ("cus_w", D("0.8")),
        ("cus_w", D("0.95")),
        ("cus_x", D("0.8")),
    ]
    rows = _outbox("cus_w")
    by_endpoint = sorted((alert_id, endpoint) for _, endpoint, alert_id in rows)
    first, second = (a["id"] for a in alerts[:2])
    assert by_endpoint == [
        (first, "customer"), (first, "global"), (second, "customer"), (second, "global")
    ]  # fmt: skip
    for alert in alerts:
        assert alert["topic"] == "usage.threshold_reached"  # the join on outbox_id found it
        assert alert["payload"]["alert_id"] == alert["id"]
    globals_ = [(row_id, alert_id) for row_id, endpoint, alert_id in rows if endpoint == "global"]
    assert globals_ == [(a["outbox_id"], a["id"]) for a in alerts if a["customer_id"] == "cus_w"]
    assert outbox_count() == 5


def test_an_alert_written_again_points_at_the_row_announced_before(clean_state: None) -> None:
    """An announcement is written at most once per key: an alert row deleted and written
    again keeps the first announcement (and points at it), whatever id it had taken."""
    setup_customer("cus_r")
    send(calls(8100, customer_id="cus_r"))
    [first] = alert_rows("cus_r")
    with db.connection() as conn:
        conn.execute("DELETE FROM alerts WHERE customer_id = 'cus_r'")
    _fired.clear()
    send(calls(1, customer_id="cus_r"))
    [again] = alert_rows("cus_r")
    assert again["id"] != first["id"]
    assert again["outbox_id"] == first["outbox_id"]
    assert again["payload"]["alert_id"] == first["id"]  # the announcement as it was sent
    assert outbox_count() == 1
