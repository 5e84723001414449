"""Reading the rejected events back (`meter ops rejected`): what was refused, and why.

The ingest transaction writes them (`storage.ledger.batches`); this module only lists them,
most recent first, optionally for one reason or one customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from storage import db

DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class RejectedEvent:
    id: int
    received_at: datetime
    reason: str
    detail: str | None
    customer_id: str | None
    metric: str | None
    event_id: str | None
    batch_id: str | None
    payload: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "reason": self.reason,
            "detail": self.detail,
            "customer_id": self.customer_id,
            "metric": self.metric,
            "event_id": self.event_id,
            "batch_id": self.batch_id,
            "payload": self.payload,
        }


def list_rejected(
    *, reason: str | None = None, customer_id: str | None = None, limit: int = DEFAULT_LIMIT
) -> list[RejectedEvent]:
    """The most recently recorded rejections first, at most `limit`."""
    if limit < 1:
        raise ValueError(f"limit: must be at least 1, not {limit}")
    conditions = [sql.SQL("TRUE")]
    params: dict[str, Any] = {"limit": limit}
    if reason is not None:
        conditions.append(sql.SQL("reason = %(reason)s"))
        params["reason"] = reason
    if customer_id is not None:
        conditions.append(sql.SQL("customer_id = %(customer)s"))
        params["customer"] = customer_id
    query = sql.SQL(
        "SELECT id, received_at, reason, detail, customer_id, metric, event_id, batch_id,"
        " payload FROM rejected_events WHERE {} ORDER BY id DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(conditions))
    with db.connection() as conn:
        rows = conn.execute(query, params).fetchall()
    return [RejectedEvent(*row) for row in rows]
