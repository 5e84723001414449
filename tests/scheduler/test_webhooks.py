"""Webhook delivery end to end: a receiver that is down, then up; dead letters listed and
redelivered with `meter ops`; per-customer endpoints with their own secrets; signatures that a
tampered body or a replayed old request fail. Time is an input: every run is given `now`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import cli.main
from services.notifications import (
    SIGNATURE_HEADER,
    Backoff,
    deliver_configured,
    deliver_due,
    verify_signature,
)
from services.webhooks import clear_webhook, set_webhook
from storage import outbox
from storage.settings import get_settings, reset_settings
from tests.billing.helpers import customer, install_plans
from tests.webhook_receiver import receiver

SECRET = "whsec_global_0123456789"
OWN_SECRET = "whsec_acme_abcdefghijklmnop"
T0 = datetime(2027, 3, 28, 0, 30, tzinfo=UTC)  # a DST night in Europe: the clock is ours


@pytest.fixture
def customers(clean_state: None) -> None:
    install_plans()
    customer("acme", starts_at=datetime(2027, 1, 1, tzinfo=UTC))
    customer("globex", starts_at=datetime(2027, 1, 1, tzinfo=UTC))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def meter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """Run `meter ARGS` in this process as the console script does: (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["meter", *args])
    capsys.readouterr()
    code = 0
    try:
        cli.main.main()
    except SystemExit as exited:
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT id, customer_id, endpoint, attempts, delivered_at IS NOT NULL,"
        " dead_at IS NOT NULL FROM outbox ORDER BY id"
    ).fetchall()


def alert(customer_id: str, threshold: str = "0.80") -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "metric": "api_calls",
        "threshold": threshold,
        "used": "8000",
        "included": "10000",
        "period": {"start": "2027-03-01T00:00:00+00:00", "end": "2027-04-01T00:00:00+00:00"},
        "estimated_bill": "100.00",
        "idempotency_key": f"alert:{customer_id}:api_calls:{threshold}:2027-03-01",
    }


def test_down_then_up_then_dead_then_redelivered_with_meter_ops(
    db: psycopg.Connection,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backoff = Backoff(base=timedelta(seconds=10))
    with receiver(up=False) as hook:
        first = outbox.enqueue("usage.threshold_reached", alert("acme"), now=T0)
        report = deliver_due(hook.url, SECRET, backoff=backoff, max_attempts=3, now=T0)
        assert (report.delivered, report.failed, report.dead) == (0, 1, 0)  # down: refused
        (row,) = rows(db)
        assert row[3:] == (1, False, False)

        hook.start()  # up again; the row waits out its backoff, then goes
        assert deliver_due(hook.url, SECRET, now=T0 + timedelta(seconds=9)).delivered == 0
        assert deliver_due(hook.url, SECRET, now=T0 + timedelta(seconds=10)).delivered == 1
        assert [d["id"] for d in hook.delivered()] == [first]

        # A receiver that answers 500 three times: the third failure makes the row dead.
        second = outbox.enqueue("invoice.finalized", {"invoice_id": "inv_1"}, now=T0)
        hook.statuses = [500, 500, 500]
        at = T0
        for wait in (0, 10, 20):
            at += timedelta(seconds=wait)
            deliver_due(hook.url, SECRET, backoff=backoff, max_attempts=3, now=at)
        assert rows(db)[1][3:] == (3, False, True)
        # Dead: never claimed again, however late.
        assert deliver_due(hook.url, SECRET, now=at + timedelta(days=30)).failed == 0

        code, out, _err = meter(capsys, env, "ops", "notifications", "--dead", "--json")
        assert code == 0
        (listed,) = json.loads(out)
        assert listed["id"] == second and listed["status"] == "dead"
        assert (listed["topic"], listed["attempts"]) == ("invoice.finalized", 3)
        assert listed["last_error"] == "HTTP 500 Internal Server Error"
        assert listed["next_attempt_at"] is None

        env.setenv("METER_WEBHOOK_URL", hook.url)
        env.setenv("METER_WEBHOOK_SECRET", SECRET)
        reset_settings()
        code, out, err = meter(capsys, env, "ops", "redeliver", str(second), "--inline", "--json")
        assert code == 0, err
        document = json.loads(out)
        assert document["redelivered"] == [second]
        assert document["delivery"] == {"delivered": 1, "failed": 0, "dead": 0}
        assert [d["id"] for d in hook.delivered()] == [first, second]
        assert rows(db)[1][3:] == (1, True, False)  # a fresh round: delivered on its first

        code, out, _err = meter(capsys, env, "ops", "notifications", "--json")
        assert json.loads(out) == []  # nothing waits, nothing is dead


def test_redeliver_all_and_its_errors(
    db: psycopg.Connection, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [outbox.enqueue("t", {"n": n}, now=T0) for n in range(3)]
    with receiver() as hook:
        hook.statuses = [503, 503]
        deliver_due(hook.url, SECRET, max_attempts=1, now=T0)
    assert [r[5] for r in rows(db)] == [True, True, False]  # two dead, one delivered

    code, _out, err = meter(capsys, env, "ops", "redeliver")
    assert code == 2 and "error: ID: give notification ids or --all" in err
    code, _out, err = meter(capsys, env, "ops", "redeliver", "999")
    assert code == 2 and err.strip() == "error: ID: no notification 999"

    env.setattr("tasks.notify.request_delivery", lambda: None)  # no workers here
    code, out, _err = meter(capsys, env, "ops", "redeliver", "--all", "--json")
    assert json.loads(out)["redelivered"] == ids[:2]
    assert outbox.pending_count() == 2
    code, out, _err = meter(capsys, env, "ops", "redeliver", str(ids[2]), "--json")
    assert json.loads(out) == {"redelivered": [], "already_delivered": [ids[2]]}

    code, out, _err = meter(capsys, env, "ops", "notifications")
    assert code == 0 and "Undelivered notifications (2)" in out


def test_a_tampered_body_or_a_replayed_old_request_fails_verification(
    clean_state: None,
) -> None:
    with receiver() as hook:
        outbox.enqueue("usage.threshold_reached", alert("acme"), now=T0)
        deliver_due(hook.url, SECRET, now=T0)
        ((headers, body, _status),) = hook.requests
    signature = headers[SIGNATURE_HEADER]
    sent_at = T0.timestamp()

    assert verify_signature(SECRET, body, signature, now=sent_at + 5)
    tampered = body.replace(b'"used":"8000"', b'"used":"80"')
    assert tampered != body
    assert not verify_signature(SECRET, tampered, signature, now=sent_at + 5)
    assert not verify_signature("whsec_someone_else_000", body, signature, now=sent_at + 5)
    # The same request replayed ten minutes later: its signed time is too old (default 300 s).
    assert not verify_signature(SECRET, body, signature, now=sent_at + 600)
    # ... and a forged time with the old digest does not verify either.
    forged = signature.replace(f"t={int(sent_at)}", f"t={int(sent_at) + 600}")
    assert not verify_signature(SECRET, body, forged, now=sent_at + 600)


@pytest.mark.usefixtures("customers")
def test_a_customer_endpoint_receives_its_own_customers_rows_only(db: psycopg.Connection) -> None:
    with receiver() as main, receiver() as acme_hook:
        set_webhook("acme", acme_hook.url, OWN_SECRET)
        outbox.enqueue("usage.threshold_reached", alert("acme"), now=T0)
        outbox.enqueue("usage.threshold_reached", alert("globex"), now=T0)
        outbox.enqueue("invoice.finalized", {"customer_id": "acme", "invoice_id": "i"}, now=T0)

        report = deliver_due(main.url, SECRET, now=T0)

        assert (report.delivered, report.failed) == (5, 0)  # 3 global + 2 for acme's endpoint
        assert sorted(d["payload"]["customer_id"] for d in main.delivered()) == [
            "acme",
            "acme",
            "globex",
        ]
        acme_bodies = [body for _h, body, _s in acme_hook.requests]
        assert [json.loads(b)["payload"]["customer_id"] for b in acme_bodies] == ["acme", "acme"]
        for headers, body, _status in acme_hook.requests:  # signed with acme's own secret
            assert verify_signature(OWN_SECRET, body, headers[SIGNATURE_HEADER], now=T0.timestamp())
            assert not verify_signature(SECRET, body, headers[SIGNATURE_HEADER], now=T0.timestamp())
    # One row per endpoint, each with its own attempt state.
    assert [(r[1], r[2]) for r in rows(db)] == [
        ("acme", "global"),
        ("acme", "customer"),
        ("globex", "global"),
        ("acme", "global"),
        ("acme", "customer"),
    ]


@pytest.mark.usefixtures("customers")
def test_customer_rows_go_without_a_global_url_and_die_when_the_endpoint_is_cleared(
    db: psycopg.Connection,
) -> None:
    with receiver() as acme_hook:
        set_webhook("acme", acme_hook.url)  # no own secret: the global one signs
        outbox.enqueue("usage.threshold_reached", alert("acme", "0.80"), now=T0)
        report = deliver_due(None, SECRET, now=T0)  # METER_WEBHOOK_URL unset
        assert (report.delivered, report.failed) == (1, 0)
        ((headers, body, _s),) = acme_hook.requests
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER], now=T0.timestamp())
        assert [(r[2], r[4]) for r in rows(db)] == [("global", False), ("customer", True)]

        outbox.enqueue("usage.threshold_reached", alert("acme", "0.95"), now=T0)
        assert clear_webhook("acme")
        report = deliver_due(None, SECRET, now=T0)
        assert (report.failed, report.dead) == (1, 1)  # nowhere to go: dead at once
        assert len(acme_hook.requests) == 1
    (dead,) = outbox.list_notifications(dead_only=True)
    assert dead.endpoint == "customer" and "has no webhook endpoint" in (dead.last_error or "")
    assert outbox.pending_count() == 2  # the global rows wait for METER_WEBHOOK_URL


def test_the_same_idempotency_key_is_queued_once_per_endpoint(
    db: psycopg.Connection, customers: None
) -> None:
    with receiver() as hook:
        set_webhook("acme", hook.url, OWN_SECRET)
    first = outbox.enqueue("usage.threshold_reached", alert("acme"), now=T0)
    again = outbox.enqueue("usage.threshold_reached", alert("acme"), now=T0 + timedelta(hours=1))
    assert again == first
    assert len(rows(db)) == 2  # global + acme's own, once each
    outbox.enqueue("t", {"customer_id": "globex"}, now=T0)  # no key: always written
    outbox.enqueue("t", {"customer_id": "globex"}, now=T0)
    assert len(rows(db)) == 4


@pytest.mark.usefixtures("customers")
def test_set_webhook_validates_its_input(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db: psycopg.Connection
) -> None:
    bad = [
        (["acme", "ftp://example.com/hook"], "error: url: 'ftp://example.com/hook' is not an"),
        (["acme", "example.com/hook"], "is not an http:// or https:// URL"),
        (["acme", "https:///hook"], "has no host"),
        (["acme", "https://u:p@example.com/"], "error: url: must not carry credentials"),
        (["acme", "https://example.com/a b"], "contains spaces or control characters"),
        (["acme", "https://example.com:99999/"], "is not a valid URL"),
        (["acme", "https://example.com/", "--secret", "short"], "error: secret: must be 16"),
        (["nobody", "https://example.com/"], "error: customer_id: no customer 'nobody'"),
        (["acme"], "error: URL: missing"),
        (["acme", "https://example.com/", "--clear"], "error: --clear: takes no URL"),
    ]
    for args, message in bad:
        code, _out, err = meter(capsys, env, "customers", "set-webhook", *args)
        assert (code, message in err, "Traceback" in err) == (2, True, False), (args, err)
    assert db.execute("SELECT count(*) FROM customer_webhooks").fetchone() == (0,)

    url = "https://hooks.example.com/meter?team=7"
    code, out, _err = meter(capsys, env, "customers", "set-webhook", "acme", url, "--json")
    assert code == 0 and json.loads(out)["url"] == url
    assert json.loads(out)["secret"] == "METER_WEBHOOK_SECRET"
    code, out, _err = meter(capsys, env, "customers", "set-webhook", "acme", "--clear", "--json")
    assert json.loads(out)["removed"] is True


def test_the_configured_delivery_refuses_a_bad_global_url(env: pytest.MonkeyPatch) -> None:
    env.setenv("METER_WEBHOOK_URL", "hooks.example.com")
    env.setenv("METER_WEBHOOK_SECRET", SECRET)
    reset_settings()
    with pytest.raises(ValueError, match=r"METER_WEBHOOK_URL: 'hooks\.example\.com' is not"):
        deliver_configured(get_settings())
    env.setenv("METER_WEBHOOK_URL", "https://hooks.example.com/")
    env.delenv("METER_WEBHOOK_SECRET")
    reset_settings()
    with pytest.raises(ValueError, match="METER_WEBHOOK_SECRET: required"):
        deliver_configured(get_settings())


@pytest.mark.usefixtures("customers")
def test_customers_show_names_the_endpoint_never_the_secret(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db: psycopg.Connection
) -> None:
    code, out, _err = meter(capsys, env, "customers", "show", "acme", "--json")
    assert code == 0 and json.loads(out)["webhook"] is None
    set_webhook("acme", "https://acme.example.com/hooks", OWN_SECRET)
    code, out, _err = meter(capsys, env, "customers", "show", "acme", "--json")
    assert json.loads(out)["webhook"]["url"] == "https://acme.example.com/hooks"
    assert json.loads(out)["webhook"]["secret"] == "own"
    _code, out, _err = meter(capsys, env, "customers", "show", "acme")
    assert "webhook endpoint https://acme.example.com/hooks (signed with own)" in out
    assert OWN_SECRET not in out
