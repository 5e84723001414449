"""Rollups: the durable aggregate of the ledger per customer × metric × billing segment (and
per customer × metric × local day, for trends).

Written in the same transaction as the ledger rows they summarize. Every transaction that
touches a segment first bumps its `usage_periods.version`: that row lock serializes writers of
one segment (so a read-merge-write of the rollups is safe) and numbers the deltas in commit
order for the Redis counters. Invoices are computed from these rows, never from Redis.
"""

from __future__ import annotations

import json
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
SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::timestamptz[], %b::bigint[])
ORDER BY 1, 2
ON CONFLICT (customer_id, period_start) DO UPDATE SET version = usage_periods.version + 1
RETURNING customer_id, period_start, version
"""

_SELECT = """
SELECT r.customer_id, r.period_start, r.metric, r.event_count, r.total, r.maximum, r.latest_at,
       r.latest_event_id, r.latest_value, r.weighted_v, r.weighted_vt, r.charge_state
FROM usage_rollups r
JOIN unnest(%b::text[], %b::timestamptz[]) AS k(customer_id, period_start)
  ON r.customer_id = k.customer_id AND r.period_start = k.period_start
"""

# Additive merge in SQL (the same rules as MetricState.merge): no read-modify-write, so
# concurrent batches for one customer only wait on each other's row locks, briefly. Shared with
# the set-based batch write (`storage.ledger.batch_write`): the rule lives here once.
MERGE_ON_CONFLICT = """
ON CONFLICT (customer_id, metric, period_start) DO UPDATE SET
    event_count = r.event_count + excluded.event_count,
    total = r.total + excluded.total,
    maximum = GREATEST(r.maximum, excluded.maximum),
    latest_at = CASE WHEN r.latest_at IS NULL
        OR (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
        THEN excluded.latest_at ELSE r.latest_at END,
    latest_event_id = CASE WHEN r.latest_at IS NULL
        OR (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
        THEN excluded.latest_event_id ELSE r.latest_event_id END,
    latest_value = CASE WHEN r.latest_at IS NULL
        OR (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
        THEN excluded.latest_value ELSE r.latest_value END,
    weighted_v = r.weighted_v + excluded.weighted_v,
    weighted_vt = r.weighted_vt + excluded.weighted_vt,
    charge_state = coalesce(excluded.charge_state, r.charge_state),
    updated_at = now()
"""

_UPSERT = (
    """
INSERT INTO usage_rollups AS r (customer_id, metric, period_start, period_end, event_count,
    total, maximum, latest_at, latest_event_id, latest_value, weighted_v, weighted_vt,
    charge_state, updated_at)
SELECT *, now() FROM unnest(
    %b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::bigint[], %b::numeric[],
    %b::numeric[], %b::timestamptz[], %b::text[], %b::numeric[], %b::numeric[], %b::numeric[],
    %b::jsonb[])
"""
    + MERGE_ON_CONFLICT
)

# Percentage charges keep a state that only Python can merge: lock those rows (creating them
# first, so that two batches never both see "missing") and merge before the upsert.
_PLACEHOLDERS = """
INSERT INTO usage_rollups (customer_id, metric, period_start, period_end)
SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[])
ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
"""

_LOCK_CHARGES = """
SELECT r.customer_id, r.metric, r.period_start, r.charge_state FROM usage_rollups r
JOIN unnest(%b::text[], %b::text[], %b::timestamptz[]) AS k(customer_id, metric, period_start)
  ON r.customer_id = k.customer_id AND r.metric = k.metric AND r.period_start = k.period_start
ORDER BY 1, 2, 3
FOR UPDATE OF r
"""

_UNIQUES = """
INSERT INTO usage_rollup_uniques (customer_id, metric, period_start, value)
SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[])
ON CONFLICT DO NOTHING
"""

_DAILY = """
INSERT INTO usage_daily (customer_id, metric, day, event_count, total)
SELECT * FROM unnest(%b::text[], %b::text[], %b::date[], %b::bigint[], %b::numeric[])
ON CONFLICT (customer_id, metric, day) DO UPDATE SET
    event_count = usage_daily.event_count + excluded.event_count,
    total = usage_daily.total + excluded.total
"""


def _state_from_row(row: Sequence[Any]) -> MetricState:
    """A MetricState from the rollup columns (count, total, ..., weighted_vt)."""
    return MetricState.from_dict(
        {
            "count": row[0],
            "total": str(row[1]),
            "maximum": None if row[2] is None else str(row[2]),
            "latest_at": None if row[3] is None else row[3].isoformat(),
            "latest_event_id": row[4],
            "latest_value": None if row[5] is None else str(row[5]),
            "weighted_v": str(row[6]),
            "weighted_vt": str(row[7]),
        }
    )


def read_states(
    conn: psycopg.Connection[Any], keys: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], SegmentState]:
    """The stored state of each (customer, segment start), in one query."""
    return states_from(send_states(conn, keys), keys)


def send_states(conn: psycopg.Connection[Any], keys: Sequence[tuple[str, datetime]]) -> Any:
    """Send `read_states`'s query (in the caller's pipeline: no round trip of its own); pass
    the cursor to `states_from` once the pipeline has synced."""
    return conn.execute(_SELECT, ([k[0] for k in keys], [k[1] for k in keys]))


def states_from(
    cursor: Any, keys: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], SegmentState]:
    """The states `send_states` read, one per key (empty where the segment has no rows)."""
    states: dict[tuple[str, datetime], SegmentState] = {key: SegmentState() for key in keys}
    for row in cursor.fetchall():
        state = states[(row[0], row[1])]
        state.metrics[row[2]] = _state_from_row(row[3:11])
        for charge_key, charge in (row[11] or {}).items():
            state.charges[charge_key] = state.charge_from_json(charge)
    return states


def _merged_charges(
    conn: psycopg.Connection[Any], deltas: Sequence[SegmentDelta]
) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    """The new charge_state of every rollup row whose metric has a percentage charge."""
    keys = sorted(
        {
            (d.customer_id, key.rsplit(":", 1)[0], d.start, d.end)
            for d in deltas
            for key in d.state.charges
        }
    )
    if not keys:
        return {}
    columns = [list(column) for column in zip(*keys, strict=True)]
    conn.execute(_PLACEHOLDERS, columns)
    stored: dict[tuple[str, str, datetime], dict[str, Any]] = {
        (row[0], row[1], row[2]): row[3] or {}
        for row in conn.execute(_LOCK_CHARGES, columns[:3]).fetchall()
    }
    merged: dict[tuple[str, str, datetime], dict[str, Any]] = {}
    for delta in deltas:
        for charge_key, (charge, state) in delta.state.charges.items():
            metric = charge_key.rsplit(":", 1)[0]
            row_key = (delta.customer_id, metric, delta.start)
            current = merged.setdefault(row_key, dict(stored.get(row_key, {})))
            if charge_key in current:
                _, old = SegmentState.charge_from_json(current[charge_key])
                state = old.merge(state, charge)
            current[charge_key] = SegmentState.charge_json(charge, state)
    return merged


def apply(
    conn: psycopg.Connection[Any], deltas: Sequence[SegmentDelta], *, bump: bool = True
) -> dict[tuple[str, datetime], int]:
    """Merge the deltas into the rollups; return the new version of each segment touched.

    A constant number of statements per batch, whatever the number of customers in it. The
    segments' versions are bumped last: their row locks are held only until the commit.
    With `bump=False` the caller bumps them itself (the batch write does, once per segment
    for both of its paths) and the result is empty.
    """
    if not deltas:
        return {}
    ordered = sorted(deltas, key=lambda d: (d.customer_id, d.start))
    charges = _merged_charges(conn, ordered)
    upserts = [
        _rollup_row(delta, metric, charges.get((delta.customer_id, metric, delta.start)))
        for delta in ordered
        for metric in sorted(delta.state.metrics)
    ]
    uniques = sorted(
        (delta.customer_id, metric, delta.start, value)
        for delta in ordered
        for metric, values in delta.uniques.items()
        for value in values
    )
    if upserts:
        conn.execute(_UPSERT, _columns(upserts))
    if uniques:
        conn.execute(_UNIQUES, _columns(uniques))
    _add_days(conn, _days_of(ordered))
    if not bump:
        return {}
    rows = conn.execute(
        _BUMP,
        (
            [d.customer_id for d in ordered],
            [d.start for d in ordered],
            [d.end for d in ordered],
            [1] * len(ordered),
        ),
    ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def _rollup_row(
    delta: SegmentDelta, metric: str, charge_state: dict[str, Any] | None
) -> tuple[Any, ...]:
    """One `_UPSERT` row: the delta of `metric` in the order of the statement's columns."""
    state = delta.state.metrics[metric]
    return (
        delta.customer_id,
        metric,
        delta.start,
        delta.end,
        state.count,
        state.total,
        state.maximum,
        state.latest_at,
        state.latest_event_id,
        state.latest_value,
        state.weighted_v,
        state.weighted_vt,
        Jsonb(charge_state) if charge_state is not None else None,
    )


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to one list per column (the `unnest` statements take arrays)."""
    return [list(column) for column in zip(*rows, strict=True)]


def _days_of(deltas: Sequence[SegmentDelta]) -> dict[tuple[str, str, date], tuple[int, Decimal]]:
    days: dict[tuple[str, str, date], tuple[int, Decimal]] = {}
    for delta in deltas:
        for (metric, day), (count, total) in delta.days.items():
            day_key = (delta.customer_id, metric, day)
            old = days.get(day_key, (0, Decimal(0)))
            days[day_key] = (old[0] + count, old[1] + total)
    return days


def _add_days(
    conn: psycopg.Connection[Any], days: dict[tuple[str, str, date], tuple[int, Decimal]]
) -> None:
    if not days:
        return
    day_keys = sorted(days)
    conn.execute(
        _DAILY,
        (
            [k[0] for k in day_keys],
            [k[1] for k in day_keys],
            [k[2] for k in day_keys],
            [days[k][0] for k in day_keys],
            [days[k][1] for k in day_keys],
        ),
    )


def rebuild(
    conn: psycopg.Connection[Any],
    customer_id: str,
    since: datetime,
    first_day: date,
    deltas: Sequence[SegmentDelta],
    segments: Sequence[tuple[datetime, datetime]],
) -> None:
    """Replace a customer's rollups from segment start `since` on, and its daily totals from
    `first_day` on, with `deltas` (derived again from the ledger); then bump the version of
    every segment from `since` on and record the end of each of `segments` (start, end).

    Deltas of segments that start before `since` only add their daily totals (their rollups
    are left as they are). The caller holds the locks that keep ingest out meanwhile.
    """
    conn.execute(
        "DELETE FROM usage_rollups WHERE customer_id = %s AND period_start >= %s",
        (customer_id, since),
    )
    conn.execute(
        "DELETE FROM usage_rollup_uniques WHERE customer_id = %s AND period_start >= %s",
        (customer_id, since),
    )
    conn.execute(
        "DELETE FROM usage_daily WHERE customer_id = %s AND day >= %s", (customer_id, first_day)
    )
    apply(conn, [d for d in deltas if d.start >= since])
    _add_days(conn, _days_of([d for d in deltas if d.start < since]))
    restamp(conn, customer_id, since, segments)


def restamp(
    conn: psycopg.Connection[Any],
    customer_id: str,
    since: datetime,
    segments: Sequence[tuple[datetime, datetime]],
) -> None:
    """Bump the version of every segment of the customer from `since` on (counters and
    invoices see the change) and record the end of each of `segments` (start, end)."""
    conn.execute(
        "UPDATE usage_periods SET version = version + 1 WHERE customer_id = %s"
        " AND period_start >= %s",
        (customer_id, since),
    )
    if not segments:
        return
    starts, ends = [s for s, _ in segments], [e for _, e in segments]
    conn.execute(
        "INSERT INTO usage_periods (customer_id, period_start, period_end, version)"
        " SELECT %s, s, e, 1 FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS t(s, e)"
        " ON CONFLICT (customer_id, period_start)"
        " DO UPDATE SET period_end = excluded.period_end",
        (customer_id, starts, ends),
    )
    conn.execute(
        "UPDATE usage_rollups r SET period_end = t.e"
        " FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS t(s, e)"
        " WHERE r.customer_id = %s AND r.period_start = t.s AND r.period_end <> t.e",
        (starts, ends, customer_id),
    )


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
        state = read_states(conn, [(customer_id, start)])[(customer_id, start)]
        uniques: dict[str, list[str]] = {}
        for metric, value in conn.execute(
            "SELECT metric, value FROM usage_rollup_uniques"
            " WHERE customer_id = %s AND period_start = %s",
            (customer_id, start),
        ):
            uniques.setdefault(metric, []).append(value)
    return Snapshot(version=int(row[0]) if row else 0, state=state, uniques=uniques)


def read_uniques(
    keys: Sequence[tuple[str, datetime]],
) -> dict[tuple[str, datetime], dict[str, list[str]]]:
    """The distinct values stored for each (customer, segment start), per metric: one query."""
    found: dict[tuple[str, datetime], dict[str, list[str]]] = {key: {} for key in keys}
    if not keys:
        return found
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT u.customer_id, u.period_start, u.metric, u.value FROM usage_rollup_uniques u"
            " JOIN unnest(%b::text[], %b::timestamptz[]) AS k(customer_id, period_start)"
            " ON u.customer_id = k.customer_id AND u.period_start = k.period_start",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
    for customer_id, start, metric, value in rows:
        found[(customer_id, start)].setdefault(metric, []).append(value)
    return found


# What a sum, count or max metric's value reads (MetricState.value), compared in place.
_REACHING = """
SELECT k.i FROM jsonb_to_recordset(%s::jsonb)
    AS k(i int, c text, s timestamptz, m text, a text, l numeric)
JOIN usage_rollups r ON r.customer_id = k.c AND r.period_start = k.s AND r.metric = k.m
WHERE CASE k.a WHEN 'sum' THEN r.total WHEN 'count' THEN r.event_count
               ELSE coalesce(r.maximum, 0) END >= k.l
"""


def reaching(candidates: Sequence[tuple[str, str, str, str, Decimal]]) -> set[int]:
    """Which of (customer, segment start as ISO text, metric, aggregation: sum, count or max,
    level) have a committed value at or above their level, as indexes into `candidates`: one
    query, one small JSON parameter, a reply only for those reached (a filter before the
    exact comparison)."""
    if not candidates:
        return set()
    document = json.dumps(
        [
            {"i": i, "c": c, "s": s, "m": m, "a": a, "l": str(level)}
            for i, (c, s, m, a, level) in enumerate(candidates)
        ]
    )
    with db.connection() as conn:
        return {row[0] for row in conn.execute(_REACHING, (document,)).fetchall()}
