"""Customers' own webhook endpoints: the rows of `customer_webhooks`.

Which URLs are acceptable is decided by `services.webhooks`; the outbox reads this table when a
notification is written (a customer with an endpoint gets a row of its own,
`storage.outbox.enqueue`), and the deliverer reads it for the URL and secret of each row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pricing.errors import echo
from storage import db
from storage.errors import NotFound


@dataclass(frozen=True)
class CustomerWebhook:
    """Where a customer's notifications go; `secret` None: METER_WEBHOOK_SECRET signs them."""

    customer_id: str
    url: str
    secret: str | None
    updated_at: datetime


def set_webhook(
    customer_id: str, url: str, secret: str | None, *, now: datetime | None = None
) -> CustomerWebhook:
    """Store (or replace) the customer's endpoint. Raises NotFound for an unknown customer."""
    now = now or datetime.now(UTC)
    with db.transaction() as tx:
        if tx.execute("SELECT 1 FROM customers WHERE id = %s", (customer_id,)).fetchone() is None:
            raise NotFound(f"customer_id: no customer {echo(customer_id)}")
        tx.execute(
            "INSERT INTO customer_webhooks (customer_id, url, secret, updated_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE"
            " SET url = excluded.url, secret = excluded.secret, updated_at = excluded.updated_at",
            (customer_id, url, secret, now),
        )
    return CustomerWebhook(customer_id, url, secret, now)


def clear_webhook(customer_id: str) -> bool:
    """Remove the customer's endpoint; False when it had none."""
    with db.connection() as conn:
        cursor = conn.execute(
            "DELETE FROM customer_webhooks WHERE customer_id = %s", (customer_id,)
        )
        return cursor.rowcount > 0


def get_webhooks(customer_ids: Iterable[str]) -> dict[str, CustomerWebhook]:
    """The endpoints of those of `customer_ids` that have one."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT customer_id, url, secret, updated_at FROM customer_webhooks"
            " WHERE customer_id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {row[0]: CustomerWebhook(*row) for row in rows}
