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

_INSERT = (
    """
INSERT INTO alerts (customer_id, metric, kind, threshold, basis, period_start, period_end,
    period_label, plan_code, value, estimated_total, currency, triggered_at, outbox_id)
SELECT customer_id, metric, kind, threshold, basis, period_start, period_end, period_label,
    plan_code, value, estimated_total, currency, triggered_at, """
    + outbox.NEXT_ID
    + """
FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[],
    %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::numeric[],
    %s::numeric[], %s::text[], %s::timestamptz[]) WITH ORDINALITY
    AS t(customer_id, metric, kind, threshold, basis, period_start, period_end, period_label,
         plan_code, value, estimated_total, currency, triggered_at, ord)
ORDER BY ord
ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING
RETURNING id, customer_id, period_start, metric, kind, threshold, basis, outbox_id
"""
)

# The columns of `_INSERT`, in its order.
_PARAMS = (
    "customer_id", "metric", "kind", "threshold", "basis", "period_start", "period_end",
    "period_label", "plan_code", "value", "estimated_total", "currency", "triggered_at",
)  # fmt: skip

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

    def key(self) -> tuple[Any, ...]:
        return (self.customer_id, self.period_start, self.metric, self.kind, self.threshold,
                self.basis)  # fmt: skip


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
    """Write the alerts not written before, each with its outbox row (whose payload gets the
    alert's `alert_id`), on `conn` (the caller's transaction), in the order given: two
    statements whatever their number (the alert takes its outbox row's id from the outbox's
    sequence, so no second write of the alert). Returns those written with their ids, in
    that order."""
    if not alerts:
        return []
    columns = [[getattr(alert, name) for alert in alerts] for name in _PARAMS]
    rows = conn.execute(_INSERT, columns).fetchall()
    ids = {(r[1], r[2], r[3], r[4], r[5], r[6]): (int(r[0]), int(r[7])) for r in rows}
    taken = [(alert, ids[alert.key()]) for alert in alerts if alert.key() in ids]
    if not taken:
        return []  # all fired before (or by a concurrent worker that committed first)
    written = [(alert, alert_id) for alert, (alert_id, _) in taken]
    outbox_ids = outbox.enqueue_many(
        [
            (
                alert.topic,
                alert.customer_id,
                alert.payload["idempotency_key"],
                {**alert.payload, "alert_id": alert_id},
            )
            for alert, alert_id in written
        ],
        conn,
        now=written[0][0].triggered_at,
        global_ids=[outbox_id for _, (_, outbox_id) in taken],
    )
    # An announcement queued before under the alert's key (its alert row since deleted) keeps
    # its row: the alert points at it.
    moved = [
        (alert_id, found)
        for (_, (alert_id, taken_id)), found in zip(taken, outbox_ids, strict=True)
        if found != taken_id
    ]
    if moved:
        conn.execute(
            "UPDATE alerts a SET outbox_id = t.outbox_id"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, outbox_id) WHERE a.id = t.id",
            ([alert_id for alert_id, _ in moved], [found for _, found in moved]),
        )
    return written


def fired_keys(
    segments: Iterable[tuple[str, datetime]],
) -> dict[tuple[str, datetime], set[tuple[Any, ...]]]:
    """For each (customer, period start): the (kind, metric, threshold, basis) fired, one
    query for all of them."""
    keys = list(segments)
    found: dict[tuple[str, datetime], set[tuple[Any, ...]]] = {key: set() for key in keys}
    if not keys:
        return found
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT a.customer_id, a.period_start, a.kind, a.metric, a.threshold, a.basis"
            " FROM alerts a JOIN unnest(%s::text[], %s::timestamptz[]) AS k(c, s)"
            " ON a.customer_id = k.c AND a.period_start = k.s",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
    for customer_id, start, kind, metric, threshold, basis in rows:
        found.setdefault((customer_id, start), set()).add((kind, metric, threshold, basis))
    return found


def fired_in(customer_id: str, period_start: datetime) -> list[StoredAlert]:
    """The alerts of one customer's billing period, in the order they fired."""
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE customer_id = %s AND period_start = %s"  # noqa: S608 (constant SQL text; values are parameters)
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
            f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608 (constant SQL text; values are parameters)
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
