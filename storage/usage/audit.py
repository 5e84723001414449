"""The data side of reconciliation (`services.reconcile` holds the rules): the rollups read
against the ledger in one statement, the customers to look at page by page, and the summary of
the last run kept in Redis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from storage import db
from storage.redis_client import get_redis

LAST_REPORT_KEY = "ml:reconcile:last"

# Per wanted (customer, segment, metric): the count, sum and peak of the event quantities in
# the ledger and in the rollup, both read in the same snapshot; only rows that differ.
_LEDGER_VS_ROLLUPS = """
WITH wanted AS (
    SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[])
        AS w(customer_id, period_start, period_end, metric, event_name)
), ledger AS (
    SELECT w.customer_id, w.period_start, w.metric, count(e.event_id) AS events,
           coalesce(sum(e.quantity), 0) AS total, max(e.quantity) AS maximum
    FROM wanted w
    LEFT JOIN usage_events e ON e.customer_id = w.customer_id AND e.metric = w.event_name
        AND e."timestamp" >= w.period_start AND e."timestamp" < w.period_end
    GROUP BY w.customer_id, w.period_start, w.metric
)
SELECT l.customer_id, l.period_start, l.metric, l.events, l.total, l.maximum,
       coalesce(r.event_count, 0), coalesce(r.total, 0), r.maximum
FROM ledger l
LEFT JOIN usage_rollups r USING (customer_id, period_start, metric)
WHERE l.events <> coalesce(r.event_count, 0) OR l.total <> coalesce(r.total, 0)
   OR l.maximum IS DISTINCT FROM r.maximum
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class Figures:
    """Event count, sum and peak of the quantities (None: no event)."""

    count: int
    total: Decimal
    maximum: Decimal | None


@dataclass(frozen=True)
class Wanted:
    """One rollup to compare: `metric` of the segment, read from events named `event_name`."""

    customer_id: str
    start: datetime
    end: datetime
    metric: str
    event_name: str


@dataclass(frozen=True)
class Mismatch:
    customer_id: str
    period_start: datetime
    metric: str
    ledger: Figures
    rollup: Figures


def ledger_vs_rollups(wanted: Sequence[Wanted]) -> list[Mismatch]:
    """The wanted rollups whose count, sum or peak differs from the ledger's events."""
    if not wanted:
        return []
    columns = [
        [w.customer_id for w in wanted],
        [w.start for w in wanted],
        [w.end for w in wanted],
        [w.metric for w in wanted],
        [w.event_name for w in wanted],
    ]
    with db.connection() as conn:
        rows = conn.execute(_LEDGER_VS_ROLLUPS, columns).fetchall()
    return [
        Mismatch(
            row[0],
            row[1],
            row[2],
            Figures(int(row[3]), row[4], row[5]),
            Figures(int(row[6]), row[7], row[8]),
        )
        for row in rows
    ]


def customer_ids_after(last: str, starts_by: datetime, limit: int) -> list[str]:
    """Up to `limit` ids after `last` (in id order) of customers who started by `starts_by`:
    one page of a keyset walk, so no transaction stays open over the customers table."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id FROM customers WHERE id > %s AND starts_at <= %s ORDER BY id LIMIT %s",
            (last, starts_by, limit),
        ).fetchall()
    return [row[0] for row in rows]


def store_last_report(summary: dict[str, Any]) -> None:
    get_redis().set(LAST_REPORT_KEY, json.dumps(summary))


def last_report() -> dict[str, Any] | None:
    """The summary of the last run over all customers, or None if there was none."""
    raw = get_redis().get(LAST_REPORT_KEY)
    return None if raw is None else dict(json.loads(raw))
