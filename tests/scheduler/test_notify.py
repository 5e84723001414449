"""Webhook delivery from the outbox: signed POSTs to a real local HTTP server, retries with
backoff while it fails, exactly one delivery once it recovers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.notifications import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Backoff,
    deliver_due,
    sign,
    verify_signature,
)
from storage import outbox
from storage.settings import reset_settings
from tasks.notify import deliver_notifications
from tests.webhook_receiver import Receiver
from tests.webhook_receiver import receiver as running_receiver

SECRET = "whsec_test"


@pytest.fixture
def receiver(clean_state: None) -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def outbox_row(db: psycopg.Connection, message_id: int) -> dict[str, Any]:
    row = db.execute(
        "SELECT attempts, delivered_at, last_error, next_attempt_at > now() + interval '5 s',"
        " extract(epoch FROM next_attempt_at - now()) FROM outbox WHERE id = %s",
        (message_id,),
    ).fetchone()
    assert row is not None
    keys = ("attempts", "delivered_at", "last_error", "later", "wait_s")
    return dict(zip(keys, row, strict=True))


def make_due(db: psycopg.Connection) -> None:
    """Let the backoff pass (instead of sleeping through it)."""
    db.execute("UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL")


def test_a_pending_notification_is_posted_with_a_valid_signature(
    receiver: Receiver, db: psycopg.Connection
) -> None:
    payload = {"customer_id": "cus_1", "metric": "api_calls", "threshold": "0.8"}
    message_id = outbox.enqueue("usage.threshold_crossed", payload)

    report = deliver_due(receiver.url, SECRET)

    assert (report.delivered, report.failed) == (1, 0)
    ((headers, body, _status),) = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers[DELIVERY_HEADER] == str(message_id)
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    assert not verify_signature("another secret", body, headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, body + b" ", headers[SIGNATURE_HEADER])
    document = json.loads(body)
    assert document["id"] == message_id
    assert document["topic"] == "usage.threshold_crossed"
    assert document["payload"] == payload
    row = outbox_row(db, message_id)
    assert row["attempts"] == 1 and row["delivered_at"] is not None
    assert deliver_due(receiver.url, SECRET).delivered == 0
    assert len(receiver.requests) == 1


def test_a_failing_endpoint_is_retried_with_backoff_and_delivered_once(
    receiver: Receiver, db: psycopg.Connection
) -> None:
    message_id = outbox.enqueue("invoice.finalized", {"invoice_id": "inv_1"})
    receiver.statuses = [500, 503]

    assert deliver_due(receiver.url, SECRET).failed == 1
    first = outbox_row(db, message_id)
    assert first["attempts"] == 1 and first["delivered_at"] is None
    assert first["last_error"] == "HTTP 500 Internal Server Error"
    assert first["later"] and 9 < first["wait_s"] <= 10  # Backoff().after(1) = 10 s

    assert deliver_due(receiver.url, SECRET).delivered == 0  # not due yet: no request at all
    assert len(receiver.requests) == 1

    make_due(db)
    assert deliver_due(receiver.url, SECRET).failed == 1
    second = outbox_row(db, message_id)
    assert second["attempts"] == 2 and 19 < second["wait_s"] <= 20  # doubled
    assert second["last_error"].startswith("HTTP 503")

    make_due(db)
    assert deliver_due(receiver.url, SECRET).delivered == 1  # recovered
    make_due(db)
    assert deliver_due(receiver.url, SECRET).delivered == 0
    assert [d["id"] for d in receiver.delivered()] == [message_id]  # exactly once
    assert len(receiver.requests) == 3
    final = outbox_row(db, message_id)
    assert final["attempts"] == 3 and final["delivered_at"] is not None
    assert final["last_error"] is None


def test_an_endpoint_that_is_down_counts_as_a_failed_attempt(db: psycopg.Connection) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message_id = outbox.enqueue("t", {})
    report = deliver_due(f"http://127.0.0.1:{port}/", SECRET, timeout=2)
    assert report.failed == 1
    row = outbox_row(db, message_id)
    assert row["attempts"] == 1 and row["later"] and "refused" in row["last_error"].lower()


def test_a_redirect_or_a_non_http_url_is_a_failure_not_a_delivery(
    receiver: Receiver, db: psycopg.Connection
) -> None:
    message_id = outbox.enqueue("t", {})
    receiver.statuses = [302]
    assert deliver_due(receiver.url, SECRET).failed == 1
    assert outbox_row(db, message_id)["last_error"].startswith("HTTP 302")
    make_due(db)
    assert deliver_due("file:///etc/hostname", SECRET).failed == 1
    assert "not an http(s) URL" in outbox_row(db, message_id)["last_error"]
    assert receiver.delivered() == []


def test_concurrent_deliverers_never_send_a_notification_twice(receiver: Receiver) -> None:
    ids = [outbox.enqueue("t", {"n": n}) for n in range(40)]
    workers = [
        threading.Thread(target=deliver_due, args=(receiver.url, SECRET), kwargs={"batch": 3})
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(d["id"] for d in receiver.delivered()) == ids
    assert outbox.pending_count() == 0


def test_a_notification_written_in_a_rolled_back_transaction_does_not_exist(
    receiver: Receiver, test_servers: Any
) -> None:
    with psycopg.connect(test_servers.database_url) as conn:
        outbox.enqueue("kept", {}, conn=conn)
        conn.commit()
        outbox.enqueue("dropped", {}, conn=conn)
        conn.rollback()
    deliver_due(receiver.url, SECRET)
    assert [d["topic"] for d in receiver.delivered()] == ["kept"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes for the settings; the settings are re-read after they are undone."""
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def test_the_actor_delivers_to_the_configured_webhook(
    receiver: Receiver, env: pytest.MonkeyPatch
) -> None:
    env.setenv("METER_WEBHOOK_URL", receiver.url)
    env.setenv("METER_WEBHOOK_SECRET", SECRET)
    reset_settings()
    outbox.enqueue("t", {"x": 1})
    deliver_notifications()
    assert [d["payload"] for d in receiver.delivered()] == [{"x": 1}]


def test_without_a_webhook_url_notifications_wait(
    receiver: Receiver, env: pytest.MonkeyPatch
) -> None:
    env.delenv("METER_WEBHOOK_URL", raising=False)
    reset_settings()
    outbox.enqueue("t", {})
    deliver_notifications()
    assert receiver.requests == [] and outbox.pending_count() == 1


def test_signatures_expire_and_backoff_is_capped() -> None:
    header = sign(SECRET, b"{}", 1_000_000)
    assert verify_signature(SECRET, b"{}", header, now=1_000_100)
    assert not verify_signature(SECRET, b"{}", header, now=1_000_400)  # a replay, too late
    assert not verify_signature(SECRET, b"{}", "garbage")
    backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(minutes=5))
    assert [backoff.after(n).total_seconds() for n in (1, 2, 3, 6, 50)] == [10, 20, 40, 300, 300]


def test_when_a_notification_is_due_is_judged_on_the_callers_clock(db: psycopg.Connection) -> None:
    """Time is an input: enqueued, claimed, leased and retried at given instants (the
    database server's own clock plays no part)."""
    at = datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    message_id = outbox.enqueue("t", {}, now=at)
    lease = timedelta(seconds=60)
    assert outbox.due(10, lease=lease, now=at - timedelta(seconds=1)) == []
    assert [m.id for m in outbox.due(10, lease=lease, now=at)] == [message_id]
    assert outbox.due(10, lease=lease, now=at + timedelta(seconds=59)) == []  # leased
    outbox.mark_failed(message_id, "HTTP 503", timedelta(seconds=30), now=at + timedelta(seconds=5))
    assert outbox.due(10, lease=lease, now=at + timedelta(seconds=34)) == []
    assert [m.id for m in outbox.due(10, lease=lease, now=at + timedelta(seconds=35))] == [
        message_id
    ]
    outbox.mark_delivered(message_id, now=at + timedelta(seconds=36))
    assert outbox.due(10, lease=lease, now=at + timedelta(days=1)) == []
    assert outbox_row(db, message_id)["attempts"] == 2
