"""`invoice.finalized` goes into the outbox in the finalizing transaction: once per invoice,
whatever retries, races or rollbacks happen around it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from services import invoice_lifecycle as invoices
from services.webhooks import set_webhook
from storage import db as storage_db
from tests.billing.helpers import customer, event, ingest, utc

pytestmark = pytest.mark.usefixtures("plans")

JANUARY = utc(2026, 1, 1)
AFTER_GRACE = utc(2026, 2, 1, 1)


def finalized_rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT endpoint, customer_id, idempotency_key, payload, created_at FROM outbox"
        " WHERE topic = 'invoice.finalized' ORDER BY id"
    ).fetchall()


def test_finalizing_writes_one_notification_with_the_invoice(db: psycopg.Connection) -> None:
    customer("fin", "small", starts_at=utc(2025, 12, 1))
    ingest([event("fin", utc(2026, 1, 10), quantity=300)])
    draft = invoices.generate("fin", JANUARY)
    assert finalized_rows(db) == []  # a draft is not news

    final = invoices.finalize(draft.id, now=AFTER_GRACE)
    invoices.finalize(draft.id, now=AFTER_GRACE)  # retried: a no-op
    assert invoices.finalize_due(now=AFTER_GRACE) == []  # the sweep finds nothing either

    assert final.due_date is not None  # the payment terms' due date travels with the news
    ((endpoint, customer_id, key, payload, created_at),) = finalized_rows(db)
    assert (endpoint, customer_id, created_at) == ("global", "fin", AFTER_GRACE)
    assert key == f"invoice.finalized:{final.id}"
    assert payload == {
        "invoice_id": final.id,
        "number": 1,
        "customer_id": "fin",
        "period": final.period_label,
        "period_start": "2026-01-01T00:00:00+00:00",
        "period_end": "2026-02-01T00:00:00+00:00",
        "currency": "USD",
        "subtotal": "120.00",
        "tax": "12.00",
        "total": "132.00",
        "finalized_at": AFTER_GRACE.isoformat(),
        "due_date": final.due_date.isoformat() if final.due_date else None,
        "idempotency_key": key,
    }


def test_concurrent_finalizations_write_one_notification(db: psycopg.Connection) -> None:
    customer("race", "small", starts_at=utc(2025, 12, 1))
    draft = invoices.generate("race", JANUARY)
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def finalize() -> None:
        barrier.wait()
        results.append(invoices.finalize(draft.id, now=AFTER_GRACE).number)

    threads = [threading.Thread(target=finalize) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [1, 1, 1, 1]
    assert len(finalized_rows(db)) == 1


def test_a_finalization_that_rolls_back_leaves_no_notification(db: psycopg.Connection) -> None:
    customer("undo", "small", starts_at=utc(2025, 12, 1))
    draft = invoices.generate("undo", JANUARY)
    with storage_db.connection() as conn:
        conn.autocommit = False
        invoices.finalize(draft.id, now=AFTER_GRACE, conn=conn)
        conn.rollback()
    assert finalized_rows(db) == []
    assert invoices.get_invoice(draft.id).status == "draft"

    final = invoices.finalize(draft.id, now=AFTER_GRACE)  # the retry writes it, once
    assert final.number == 1
    assert [row[3]["number"] for row in finalized_rows(db)] == [1]


def test_a_notification_that_cannot_be_written_fails_the_finalization(
    db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer("atomic", "small", starts_at=utc(2025, 12, 1))
    draft = invoices.generate("atomic", JANUARY)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise psycopg.OperationalError("outbox unavailable")

    monkeypatch.setattr("storage.outbox.enqueue", broken)
    with pytest.raises(psycopg.OperationalError):
        invoices.finalize(draft.id, now=AFTER_GRACE)
    assert invoices.get_invoice(draft.id).status == "draft"  # no final invoice without its news
    monkeypatch.undo()
    assert invoices.finalize(draft.id, now=AFTER_GRACE).number == 1  # the number was given back


def test_a_customer_with_its_own_endpoint_gets_a_row_of_its_own(db: psycopg.Connection) -> None:
    customer("own", "small", starts_at=utc(2025, 12, 1))
    set_webhook("own", "https://own.example.com/hooks")
    final = invoices.finalize(invoices.generate("own", JANUARY).id, now=AFTER_GRACE)
    invoices.finalize(final.id, now=AFTER_GRACE)
    rows = finalized_rows(db)
    assert [(row[0], row[1]) for row in rows] == [("global", "own"), ("customer", "own")]
    assert rows[0][3] == rows[1][3]  # the same notification, one delivery state each
