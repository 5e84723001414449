"""Real Dramatiq workers (`dramatiq workers.app`) and a real receiver, no scheduler: a
finalization processed by a worker reaches the webhook by itself (prompt delivery), and a
worker SIGKILLed in the middle of a POST loses nothing: the row is due again once its lease
has run out, and is then delivered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import psycopg
import pytest

from services import invoice_lifecycle as invoices
from services.notifications import SIGNATURE_HEADER, deliver_due, verify_signature
from storage.settings import get_settings
from tasks import names
from tasks.broker import make_broker
from tests.billing.helpers import customer, install_plans
from tests.webhook_receiver import receiver

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_worker_0123456789"


@contextmanager
def worker(url: str) -> Iterator[subprocess.Popen[bytes]]:
    settings = get_settings()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=str(settings.DATABASE_URL),
        REDIS_URL=str(settings.REDIS_URL),
        METER_WEBHOOK_URL=url,
        METER_WEBHOOK_SECRET=SECRET,
        METER_WEBHOOK_TIMEOUT_SECONDS="30",
        dramatiq_worker_timeout="100",
    )
    env.pop("BROKER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "workers.app", "-p", "1", "-t", "2",
         "--queues", names.BILLING_QUEUE, names.NOTIFY_QUEUE],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def send_finalize_due() -> None:
    broker = make_broker()
    try:
        broker.declare_queue(names.BILLING_QUEUE)
        broker.enqueue(
            dramatiq.Message(
                queue_name=names.BILLING_QUEUE,
                actor_name=names.FINALIZE_DUE_INVOICES,
                args=(),
                kwargs={},
                options={},
            )
        )
    finally:
        broker.close()


@pytest.fixture
def draft(clean_state: None) -> invoices.Invoice:
    """A draft of a period long over (its grace too), for a worker's finalize_due to take."""
    install_plans()
    now = datetime.now(UTC)
    months = now.year * 12 + now.month - 1 - 2
    start = datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)
    customer("hooked", "small", starts_at=start)
    return invoices.generate("hooked", start)


def test_a_worker_finalizing_sends_the_webhook_without_any_scheduler(
    draft: invoices.Invoice,
) -> None:
    with receiver() as hook, worker(hook.url):
        send_finalize_due()
        assert hook.wait_for(1, timeout=60), "no webhook within 60 s"
    ((headers, body, _status),) = hook.requests
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    document = json.loads(body)
    assert document["topic"] == "invoice.finalized"
    assert document["payload"]["invoice_id"] == draft.id
    assert document["payload"]["number"] == 1


def test_a_worker_killed_mid_post_leaves_the_row_due_after_its_lease(
    draft: invoices.Invoice, db: psycopg.Connection
) -> None:
    with receiver() as hook:
        hook.hang.set()  # the first POST never gets an answer
        with worker(hook.url) as process:
            send_finalize_due()
            assert hook.wait_for(1, timeout=60, answered=False), "no POST within 60 s"
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        hook.hang.clear()
        ((leased_until,),) = db.execute("SELECT next_attempt_at FROM outbox").fetchall()
        assert db.execute("SELECT attempts, delivered_at FROM outbox").fetchone() == (0, None)
        # Not due while the dead worker's lease runs; due (and delivered once) after it.
        assert deliver_due(hook.url, SECRET, now=leased_until - timedelta(seconds=1)).delivered == 0
        assert deliver_due(hook.url, SECRET, now=leased_until).delivered == 1
    assert [d["payload"]["invoice_id"] for d in hook.delivered()] == [draft.id]
    assert len(hook.requests) == 2  # the unanswered one, then the delivery
    assert db.execute("SELECT attempts FROM outbox").fetchone() == (1,)
