"""Per-customer limit overrides: the rows, and the Redis revision that invalidates caches.

Every change writes the rows, then sets the customer's revision key in Redis to a fresh
value. A reader that caches a customer's overrides keeps the revision it read them at and
compares it with the key's current value, which `check_limit` reads in the same pipeline as
the counters: a changed (or vanished) value means the overrides are read again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from pricing.limits import LimitOverrides, MetricLimits
from storage import db
from storage.redis_client import get_redis
from storage.usage.counters import customer_tag

#: How long the revision keys live; a lost key only makes readers re-read the rows.
REVISION_TTL = 90 * 86400


def revision_key(customer_id: str) -> str:
    return f"ml:{{{customer_tag(customer_id)}}}:limits-rev"


def decode_revision(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def read_revision(customer_id: str) -> str:
    """The customer's current revision ("" when none was ever set or the key expired)."""
    return decode_revision(get_redis().get(revision_key(customer_id)))


def read_revisions(customer_ids: Sequence[str]) -> dict[str, str]:
    """`read_revision` of many customers in one round trip (a pipeline of GETs, not an MGET:
    the keys carry different hash tags, which a Redis Cluster keeps on different slots)."""
    pipe = get_redis().pipeline(transaction=False)
    for customer_id in customer_ids:
        pipe.get(revision_key(customer_id))
    raw = pipe.execute() if customer_ids else []
    return {c: decode_revision(r) for c, r in zip(customer_ids, raw, strict=True)}


def bump_revision(customer_id: str) -> None:
    get_redis().set(revision_key(customer_id), uuid.uuid4().hex, ex=REVISION_TTL)


@dataclass(frozen=True)
class OverrideChange:
    """What `meter limits set` changes: a value to set, or a field to clear (None = keep)."""

    metric: str | None = None
    hard_limit: Decimal | None = None
    throttle_at: Decimal | None = None
    spend_cap: Decimal | None = None
    clear_hard_limit: bool = False
    clear_throttle_at: bool = False
    clear_spend_cap: bool = False


def read_overrides(customer_id: str, *, conn: db.Connection | None = None) -> LimitOverrides:
    """The customer's overrides (empty when it has none)."""
    with db.transaction(conn) as tx, tx.pipeline():
        metrics = tx.execute(
            "SELECT metric, hard_limit, throttle_at FROM customer_metric_limits"
            " WHERE customer_id = %s ORDER BY metric",
            (customer_id,),
        )
        cap = tx.execute(
            "SELECT spend_cap FROM customer_spend_caps WHERE customer_id = %s", (customer_id,)
        )
        rows = metrics.fetchall()
        found = cap.fetchone()
    return LimitOverrides(
        {metric: MetricLimits(hard_limit=hard, throttle_at=share) for metric, hard, share in rows},
        found[0] if found else None,
    )


def read_overrides_of(customer_ids: Sequence[str]) -> dict[str, LimitOverrides]:
    """`read_overrides` of many customers in one round trip (those with none are absent)."""
    with db.connection() as conn, conn.transaction(), conn.pipeline():
        metrics = conn.execute(
            "SELECT customer_id, metric, hard_limit, throttle_at FROM customer_metric_limits"
            " WHERE customer_id = ANY(%s) ORDER BY customer_id, metric",
            (list(customer_ids),),
        )
        caps = conn.execute(
            "SELECT customer_id, spend_cap FROM customer_spend_caps WHERE customer_id = ANY(%s)",
            (list(customer_ids),),
        )
        rows = metrics.fetchall()
        cap_of = dict(caps.fetchall())
    limits: dict[str, dict[str, MetricLimits]] = {}
    for customer_id, metric, hard, share in rows:
        own = MetricLimits(hard_limit=hard, throttle_at=share)
        limits.setdefault(customer_id, {})[metric] = own
    return {
        customer_id: LimitOverrides(limits.get(customer_id, {}), cap_of.get(customer_id))
        for customer_id in set(limits) | set(cap_of)
    }


def apply_change(customer_id: str, change: OverrideChange) -> None:
    """Write one change in one transaction, then bump the revision (readers re-read)."""
    with db.transaction() as tx:
        if change.metric is not None:
            _change_metric(tx, customer_id, change)
        if change.clear_spend_cap:
            tx.execute("DELETE FROM customer_spend_caps WHERE customer_id = %s", (customer_id,))
        elif change.spend_cap is not None:
            tx.execute(
                "INSERT INTO customer_spend_caps (customer_id, spend_cap) VALUES (%s, %s)"
                " ON CONFLICT (customer_id) DO UPDATE"
                " SET spend_cap = excluded.spend_cap, updated_at = now()",
                (customer_id, change.spend_cap),
            )
    bump_revision(customer_id)


def _change_metric(tx: db.Connection, customer_id: str, change: OverrideChange) -> None:
    tx.execute(
        "INSERT INTO customer_metric_limits (customer_id, metric, hard_limit, throttle_at)"
        " VALUES (%(c)s, %(m)s, %(h)s, %(t)s)"
        " ON CONFLICT (customer_id, metric) DO UPDATE SET"
        "  hard_limit = CASE WHEN %(ch)s THEN NULL"
        "   ELSE coalesce(excluded.hard_limit, customer_metric_limits.hard_limit) END,"
        "  throttle_at = CASE WHEN %(ct)s THEN NULL"
        "   ELSE coalesce(excluded.throttle_at, customer_metric_limits.throttle_at) END,"
        "  updated_at = now()",
        {
            "c": customer_id,
            "m": change.metric,
            "h": change.hard_limit,
            "t": change.throttle_at,
            "ch": change.clear_hard_limit,
            "ct": change.clear_throttle_at,
        },
    )
    tx.execute(
        "DELETE FROM customer_metric_limits WHERE customer_id = %s AND metric = %s"
        " AND hard_limit IS NULL AND throttle_at IS NULL",
        (customer_id, change.metric),
    )
