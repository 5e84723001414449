"""Usage for the reports, from the rollups: the daily totals (`usage_daily`) and the states of
many customers' segments at once (`usage_rollups`, `usage_rollup_uniques`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from pricing.aggregations import MetricState
from pricing.metering import SegmentState
from storage import db
from storage.analytics.invoiced import report

#: A segment of a customer: (customer id, segment start).
SegmentKey = tuple[str, datetime]


@dataclass(frozen=True)
class Day:
    day: date
    events: int
    total: Decimal
    customers: int


def daily(metric: str, first: date, last: date, customer_id: str | None = None) -> list[Day]:
    """Per local day first..last (inclusive): events and the sum of their values for `metric`,
    over every customer or one. Days without usage are absent."""
    query = (
        "SELECT day, sum(event_count), sum(total), count(*) FROM usage_daily"  # noqa: S608 (constant SQL text; values are parameters)
        " WHERE metric = %(metric)s AND day BETWEEN %(first)s AND %(last)s"
        + (" AND customer_id = %(customer)s" if customer_id is not None else "")
        + " GROUP BY day ORDER BY day"
    )
    params = {"metric": metric, "first": first, "last": last, "customer": customer_id}
    with report() as conn:
        rows = conn.execute(query, params).fetchall()
    return [Day(r[0], int(r[1]), Decimal(r[2]), int(r[3])) for r in rows]


def metric_known(metric: str) -> bool:
    """Whether any daily rollup has this metric (to tell an unknown metric from no usage)."""
    with report() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM usage_daily WHERE metric = %s)", (metric,)
        ).fetchone()
    return bool(row and row[0])


#: The rollup columns of many segments (`storage.usage.rollups` has the same read for one),
#: turned into metric states here directly from the values psycopg returns.
_STATES = """
SELECT r.customer_id, r.period_start, r.metric, r.event_count, r.total, r.maximum, r.latest_at,
       r.latest_event_id, r.latest_value, r.weighted_v, r.weighted_vt,
       NULLIF(r.charge_state, '{}'::jsonb)
FROM usage_rollups r
JOIN unnest(%s::text[], %s::text[]::timestamptz[]) AS k(customer_id, period_start)
  ON r.customer_id = k.customer_id AND r.period_start = k.period_start
WHERE r.period_start BETWEEN %s AND %s
"""


@dataclass(frozen=True)
class SegmentUsage:
    """What a segment's rollups hold: the metric and charge states, and distinct values."""

    state: SegmentState
    uniques: dict[str, set[str]]


def segment_usage(
    keys: Sequence[SegmentKey], *, uniques: bool = True
) -> dict[SegmentKey, SegmentUsage]:
    """The rollups of many customers' segments, in one read-only transaction of two
    statements (one without `uniques`: no plan of these segments counts distinct values); a
    segment with no usage gets an empty state. The segment starts travel as text (ISO 8601
    with offset), which psycopg sends far faster than 10,000 datetimes."""
    found: dict[SegmentKey, SegmentUsage] = {}
    if not keys:
        return found
    customers, starts = [k[0] for k in keys], [k[1].isoformat() for k in keys]
    states: dict[SegmentKey, SegmentState] = {key: SegmentState() for key in keys}
    with report() as conn:
        # The range of starts lets PostgreSQL read only those periods' rollups (by
        # usage_rollups_period_idx) instead of hashing every rollup ever written.
        earliest, latest = min(k[1] for k in keys), max(k[1] for k in keys)
        for row in conn.execute(_STATES, (customers, starts, earliest, latest)).fetchall():
            state = states[(row[0], row[1])]
            state.metrics[row[2]] = MetricState(
                count=int(row[3]),
                total=row[4],
                maximum=row[5],
                latest_at=row[6],
                latest_event_id=row[7],
                latest_value=row[8],
                weighted_v=row[9],
                weighted_vt=row[10],
            )
            for charge_key, charge in (row[11] or {}).items():
                state.charges[charge_key] = SegmentState.charge_from_json(charge)
        at = [k[1] for k in keys]
        values = _uniques(conn, customers, starts, at) if uniques else {}
    for key in keys:
        found[key] = SegmentUsage(states[key], values.get(key, {}))
    return found


def _uniques(
    conn: db.Connection, customers: list[str], starts: list[str], starts_at: list[datetime]
) -> dict[SegmentKey, dict[str, set[str]]]:
    found: dict[SegmentKey, dict[str, set[str]]] = {}
    for customer_id, start, metric, value in conn.execute(
        "SELECT u.customer_id, u.period_start, u.metric, u.value FROM usage_rollup_uniques u"
        " JOIN unnest(%s::text[], %s::text[]::timestamptz[]) AS k(customer_id, period_start)"
        " ON u.customer_id = k.customer_id AND u.period_start = k.period_start"
        " WHERE u.period_start BETWEEN %s AND %s",
        (customers, starts, min(starts_at), max(starts_at)),
    ):
        found.setdefault((customer_id, start), {}).setdefault(metric, set()).add(value)
    return found
