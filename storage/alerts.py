"""Alert rows, their outbox notifications, and per-customer threshold overrides.

`record` writes an alert and its outbox row in the caller's transaction, or nothing when the
alert is already there: the unique key `alerts_once` (customer × period × metric × kind ×
threshold × basis, 0008_alerts.sql) is what makes an alert fire once under redelivery and
concurrent workers. A second writer of the same key waits for the first one's commit, then
writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing.alerts import EVERY_METRIC, AlertOverrides
from storage import db, outbox

_INSERT = """
INSERT INTO alerts (customer_id, metric, kind, threshold, basis, period_start, period_end,
    period_label, plan_code, value, estimated_total, currency, triggered_at)
VALUES (%(customer_id)s, %(metric)s, %(kind)s, %(threshold)s, %(basis)s, %(period_start)s,
    %(period_end)s, %(period_label)s, %(plan_code)s, %(value)s, %(estimated_total)s,
    %(currency)s, %(triggered_at)s)
ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING
RETURNING id
"""

_COLUMNS = (
    "id, customer_id, metric, kind, threshold, basis, period_start, period_end, period_label,"
    " plan_code, value, estimated_total, currency, triggered_at, outbox_id"
)


@dataclass(frozen=True)
class NewAlert:
    """An alert to record, with the outbox topic and payload it is announced with (the
    payload gets the alert's `alert_id` once it has one)."""

    customer_id: str
    metric: str | None
    kind: str
    threshold: Decimal
    basis: Decimal | None
    period_start: datetime
    period_end: datetime
    period_label: str
    plan_code: str
    value: Decimal
    estimated_total: Decimal | None
    currency: str
    triggered_at: datetime
    topic: str
    payload: dict[str, Any]

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("topic", "payload")}


@dataclass(frozen=True)
class StoredAlert:
    id: int
    customer_id: str
    metric: str | None
    kind: str
    threshold: Decimal
    basis: Decimal | None
    period_start: datetime
    period_end: datetime | None
    period_label: str | None
    plan_code: str | None
    value: Decimal
    estimated_total: Decimal | None
    currency: str | None
    triggered_at: datetime
    outbox_id: int | None


def record(conn: db.Connection, alerts: Sequence[NewAlert]) -> list[tuple[NewAlert, int]]:
    """Write the alerts not written before, each with its outbox row, on `conn` (the caller's
    transaction), in the order given; return those written with their ids."""
    written: list[tuple[NewAlert, int]] = []
    for alert in alerts:
        row = conn.execute(_INSERT, alert.params()).fetchone()
        if row is None:
            continue  # fired before (or by a concurrent worker that committed first)
        alert_id = int(row[0])
        payload = {**alert.payload, "alert_id": alert_id}
        outbox_id = outbox.enqueue(alert.topic, payload, conn, now=alert.triggered_at)
        conn.execute("UPDATE alerts SET outbox_id = %s WHERE id = %s", (outbox_id, alert_id))
        written.append((alert, alert_id))
    return written


def fired_in(customer_id: str, period_start: datetime) -> list[StoredAlert]:
    """The alerts of one customer's billing period, in the order they fired."""
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE customer_id = %s AND period_start = %s"
            " ORDER BY id",
            (customer_id, period_start),
        ).fetchall()
    return [StoredAlert(*row) for row in rows]


def find(
    *, customer_id: str | None = None, period_label: str | None = None, limit: int = 1000
) -> list[StoredAlert]:
    """Alerts, oldest first, of a customer and/or a period label ('2026-11')."""
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM alerts"
            " WHERE (%(customer)s::text IS NULL OR customer_id = %(customer)s)"
            " AND (%(label)s::text IS NULL OR period_label = %(label)s)"
            " ORDER BY id LIMIT %(limit)s",
            {"customer": customer_id, "label": period_label, "limit": limit},
        ).fetchall()
    return [StoredAlert(*row) for row in rows]


# --- per-customer overrides ----------------------------------------------------------------


def read_overrides(customer_ids: Iterable[str]) -> dict[str, AlertOverrides]:
    """The overrides of these customers (a customer without any is absent)."""
    ids = list(customer_ids)
    if not ids:
        return {}
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT customer_id, kind, metric, thresholds FROM alert_overrides"
            " WHERE customer_id = ANY(%s)",
            (ids,),
        ).fetchall()
    usage: dict[str, dict[str, tuple[Decimal, ...]]] = {}
    spend: dict[str, tuple[Decimal, ...]] = {}
    for customer_id, kind, metric, thresholds in rows:
        values = tuple(sorted(Decimal(v) for v in thresholds))
        if kind == "spend":
            spend[customer_id] = values
        else:
            usage.setdefault(customer_id, {})[metric] = values
    return {
        customer_id: AlertOverrides(usage.get(customer_id, {}), spend.get(customer_id))
        for customer_id in set(usage) | set(spend)
    }


def set_override(
    customer_id: str, kind: str, thresholds: Sequence[Decimal], metric: str = EVERY_METRIC
) -> None:
    """Replace the customer's thresholds of `kind` ('usage' or 'spend') for `metric`."""
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO alert_overrides (customer_id, kind, metric, thresholds, updated_at)"
            " VALUES (%s, %s, %s, %s, now())"
            " ON CONFLICT (customer_id, kind, metric)"
            " DO UPDATE SET thresholds = excluded.thresholds, updated_at = now()",
            (customer_id, kind, metric, list(thresholds)),
        )


def clear_overrides(customer_id: str, kind: str | None = None, metric: str | None = None) -> int:
    """Drop overrides (all of the customer's, or of one kind / metric); return how many."""
    with db.connection() as conn:
        cursor = conn.execute(
            "DELETE FROM alert_overrides WHERE customer_id = %(customer)s"
            " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(metric)s::text IS NULL OR metric = %(metric)s)",
            {"customer": customer_id, "kind": kind, "metric": metric},
        )
    return cursor.rowcount
