"""Rollups: the durable aggregate of the ledger per customer × metric × billing segment (and
per customer × metric × local day, for trends).

Written in the same transaction as the ledger rows they summarize. Every transaction that
touches a segment first bumps its `usage_periods.version`: that row lock serializes writers of
one segment (so a read-merge-write of the rollups is safe) and numbers the deltas in commit
order for the Redis counters. Invoices are computed from these rows, never from Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pricing.aggregations import MetricState
from pricing.metering import SegmentDelta, SegmentState
from storage import db

_BUMP = """
INSERT INTO usage_periods (customer_id, period_start, period_end, version)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[])
ORDER BY 1, 2
ON CONFLICT (customer_id, period_start) DO UPDATE SET version = usage_periods.version + 1
RETURNING customer_id, period_start, version
"""

_SELECT = """
SELECT metric, event_count, total, maximum, latest_at, latest_event_id, latest_value,
       weighted_v, weighted_vt, charge_state
FROM usage_rollups WHERE customer_id = %s AND period_start = %s
"""

_UPSERT = """
INSERT INTO usage_rollups (customer_id, metric, period_start, period_end, event_count, total,
    maximum, latest_at, latest_event_id, latest_value, weighted_v, weighted_vt, charge_state,
    updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (customer_id, metric, period_start) DO UPDATE SET
    event_count = excluded.event_count, total = excluded.total, maximum = excluded.maximum,
    latest_at = excluded.latest_at, latest_event_id = excluded.latest_event_id,
    latest_value = excluded.latest_value, weighted_v = excluded.weighted_v,
    weighted_vt = excluded.weighted_vt, charge_state = excluded.charge_state,
    updated_at = now()
"""

_UNIQUES = """
INSERT INTO usage_rollup_uniques (customer_id, metric, period_start, value)
SELECT %s, %s, %s, unnest(%s::text[]) ON CONFLICT DO NOTHING
"""

_DAILY = """
INSERT INTO usage_daily (customer_id, metric, day, event_count, total)
SELECT * FROM unnest(%s::text[], %s::text[], %s::date[], %s::bigint[], %s::numeric[])
ON CONFLICT (customer_id, metric, day) DO UPDATE SET
    event_count = usage_daily.event_count + excluded.event_count,
    total = usage_daily.total + excluded.total
"""


def _state_from_row(row: Sequence[Any]) -> MetricState:
    return MetricState.from_dict(
        {
            "count": row[1],
            "total": str(row[2]),
            "maximum": None if row[3] is None else str(row[3]),
            "latest_at": None if row[4] is None else row[4].isoformat(),
            "latest_event_id": row[5],
            "latest_value": None if row[6] is None else str(row[6]),
            "weighted_v": str(row[7]),
            "weighted_vt": str(row[8]),
        }
    )


def _read_state(conn: psycopg.Connection[Any], customer_id: str, start: datetime) -> SegmentState:
    state = SegmentState()
    for row in conn.execute(_SELECT, (customer_id, start)):
        state.metrics[row[0]] = _state_from_row(row)
        for key, charge in (row[9] or {}).items():
            state.charges[key] = state.charge_from_json(charge)
    return state


def apply(
    conn: psycopg.Connection[Any], deltas: Sequence[SegmentDelta]
) -> dict[tuple[str, datetime], int]:
    """Merge the deltas into the rollups; return the new version of each segment touched."""
    if not deltas:
        return {}
    ordered = sorted(deltas, key=lambda d: (d.customer_id, d.start))
    rows = conn.execute(
        _BUMP,
        (
            [d.customer_id for d in ordered],
            [d.start for d in ordered],
            [d.end for d in ordered],
            [1] * len(ordered),
        ),
    ).fetchall()
    versions = {(r[0], r[1]): int(r[2]) for r in rows}
    days: dict[tuple[str, str, date], tuple[int, Decimal]] = {}
    with conn.cursor() as cur:
        for delta in ordered:
            merged = _read_state(conn, delta.customer_id, delta.start).merge(delta.state)
            params = []
            for metric, state in merged.metrics.items():
                if metric not in delta.state.metrics:
                    continue
                data = state.to_dict()
                charges = {
                    k: merged.charge_json(*v)
                    for k, v in merged.charges.items()
                    if k.rsplit(":", 1)[0] == metric
                }
                params.append(
                    (
                        delta.customer_id,
                        metric,
                        delta.start,
                        delta.end,
                        data["count"],
                        data["total"],
                        data["maximum"],
                        data["latest_at"],
                        data["latest_event_id"],
                        data["latest_value"],
                        data["weighted_v"],
                        data["weighted_vt"],
                        Jsonb(charges) if charges else None,
                    )
                )
            cur.executemany(_UPSERT, params)
            for metric, values in delta.uniques.items():
                if values:
                    cur.execute(_UNIQUES, (delta.customer_id, metric, delta.start, values))
            for (metric, day), (count, total) in delta.days.items():
                key = (delta.customer_id, metric, day)
                old = days.get(key, (0, Decimal(0)))
                days[key] = (old[0] + count, old[1] + total)
    if days:
        keys = sorted(days)
        conn.execute(
            _DAILY,
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [days[k][0] for k in keys],
                [days[k][1] for k in keys],
            ),
        )
    return versions


@dataclass(frozen=True)
class Snapshot:
    version: int
    state: SegmentState
    uniques: dict[str, list[str]]


def snapshot(customer_id: str, start: datetime) -> Snapshot:
    """A consistent read of one segment's rollups and version (to rebuild its counters)."""
    with db.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute(
            "SELECT version FROM usage_periods WHERE customer_id = %s AND period_start = %s",
            (customer_id, start),
        ).fetchone()
        state = _read_state(conn, customer_id, start)
        uniques: dict[str, list[str]] = {}
        for metric, value in conn.execute(
            "SELECT metric, value FROM usage_rollup_uniques"
            " WHERE customer_id = %s AND period_start = %s",
            (customer_id, start),
        ):
            uniques.setdefault(metric, []).append(value)
    return Snapshot(version=int(row[0]) if row else 0, state=state, uniques=uniques)
