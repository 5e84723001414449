"""Customers and their subscription history.

A customer is billed in its own timezone, on calendar periods or on an anniversary day. Each plan
it has been on is a subscription row (`starts_at` inclusive, `ends_at` exclusive, NULL for the
current one), so that a period that straddles a plan change can be priced piece by piece.
`customers.plan_code` is the plan of the latest subscription.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage import db
from storage.errors import Conflict, InvalidInput, NotFound

# Ids end up in Redis keys inside a {hash tag} and in URLs: no braces, spaces or slashes.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")

_COLUMNS = sql.SQL(
    "id, name, plan_code, timezone, anchor_day, starts_at, ends_at, metadata, created_at"
)


@dataclass(frozen=True)
class Customer:
    id: str
    name: str | None
    plan_code: str
    timezone: str
    anchor_day: int | None
    starts_at: datetime
    ends_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Subscription:
    """One plan period of a customer: [starts_at, ends_at), ends_at None while current."""

    id: int
    customer_id: str
    plan_code: str
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


def create_customer(
    id: str,
    plan_code: str,
    *,
    timezone: str = "UTC",
    anchor_day: int | None = None,
    starts_at: datetime | None = None,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    conn: db.Connection | None = None,
) -> Customer:
    """Create a customer on `plan_code` from `starts_at` (default now) and open its subscription.

    Raises InvalidInput naming the field (id, plan_code, timezone, anchor_day, starts_at) and
    Conflict when the id is taken.
    """
    _check_id(id)
    _check_timezone(timezone)
    _check_anchor_day(anchor_day)
    start = _aware("starts_at", starts_at) if starts_at is not None else datetime.now(UTC)
    with db.transaction(conn) as tx:
        _check_plan_exists(tx, plan_code)
        row = (
            tx.cursor(row_factory=dict_row)
            .execute(
                sql.SQL(
                    "INSERT INTO customers (id, name, plan_code, timezone, anchor_day, starts_at,"
                    " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO NOTHING RETURNING {columns}"
                ).format(columns=_COLUMNS),
                (id, name, plan_code, timezone, anchor_day, start, Jsonb(dict(metadata or {}))),
            )
            .fetchone()
        )
        if row is None:
            raise Conflict(f"id: customer {id!r} already exists")
        tx.execute(
            "INSERT INTO subscriptions (customer_id, plan_code, starts_at) VALUES (%s, %s, %s)",
            (id, plan_code, start),
        )
    return Customer(**row)


def get_customer(id: str, *, conn: db.Connection | None = None) -> Customer:
    """The customer `id`; NotFound if there is none."""
    found = get_customers([id], conn=conn)
    if id not in found:
        raise NotFound(f"id: no customer {id!r}")
    return found[id]


def get_customers(ids: Iterable[str], *, conn: db.Connection | None = None) -> dict[str, Customer]:
    """The customers among `ids` that exist, by id (one query for a whole batch)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    with db.transaction(conn) as tx:
        rows = (
            tx.cursor(row_factory=dict_row)
            .execute(
                sql.SQL("SELECT {columns} FROM customers WHERE id = ANY(%s)").format(
                    columns=_COLUMNS
                ),
                (wanted,),
            )
            .fetchall()
        )
    return {row["id"]: Customer(**row) for row in rows}


def list_customers(
    *, plan_code: str | None = None, conn: db.Connection | None = None
) -> list[Customer]:
    """Every customer (or those currently on `plan_code`), ordered by id."""
    with db.transaction(conn) as tx:
        rows = (
            tx.cursor(row_factory=dict_row)
            .execute(
                sql.SQL(
                    "SELECT {columns} FROM customers"
                    " WHERE %(plan)s::text IS NULL OR plan_code = %(plan)s ORDER BY id"
                ).format(columns=_COLUMNS),
                {"plan": plan_code},
            )
            .fetchall()
        )
    return [Customer(**row) for row in rows]


def change_plan(
    id: str, plan_code: str, at: datetime | None = None, *, conn: db.Connection | None = None
) -> Customer:
    """Move customer `id` to `plan_code` from `at` (default now) on.

    Closes the current subscription at `at` and opens one on the new plan; the moment of the
    change belongs to the new plan. Moving to the plan it is already on changes nothing.
    `at` may not precede the current subscription's start.
    """
    when = _aware("at", at) if at is not None else datetime.now(UTC)
    with db.transaction(conn) as tx:
        cur = tx.cursor(row_factory=dict_row)
        # Row lock: two concurrent changes of one customer apply one after the other.
        customer = cur.execute(
            sql.SQL("SELECT {columns} FROM customers WHERE id = %s FOR UPDATE").format(
                columns=_COLUMNS
            ),
            (id,),
        ).fetchone()
        if customer is None:
            raise NotFound(f"id: no customer {id!r}")
        _check_plan_exists(tx, plan_code)
        current = cur.execute(
            "SELECT id, plan_code, starts_at FROM subscriptions"
            " WHERE customer_id = %s AND ends_at IS NULL",
            (id,),
        ).fetchone()
        if current is not None and current["plan_code"] == plan_code:
            return Customer(**customer)
        if current is not None:
            if when < current["starts_at"]:
                raise InvalidInput(
                    f"at: {when.isoformat()} is before the current subscription's start"
                    f" {current['starts_at'].isoformat()}"
                )
            cur.execute(
                "UPDATE subscriptions SET ends_at = %s WHERE id = %s", (when, current["id"])
            )
        cur.execute(
            "INSERT INTO subscriptions (customer_id, plan_code, starts_at) VALUES (%s, %s, %s)",
            (id, plan_code, when),
        )
        updated = cur.execute(
            sql.SQL("UPDATE customers SET plan_code = %s WHERE id = %s RETURNING {columns}").format(
                columns=_COLUMNS
            ),
            (plan_code, id),
        ).fetchone()
    assert updated is not None
    return Customer(**updated)


def subscriptions(id: str, *, conn: db.Connection | None = None) -> list[Subscription]:
    """The subscription history of customer `id`, oldest first; NotFound if no such customer."""
    with db.transaction(conn) as tx:
        cur = tx.cursor(row_factory=dict_row)
        if cur.execute("SELECT 1 FROM customers WHERE id = %s", (id,)).fetchone() is None:
            raise NotFound(f"id: no customer {id!r}")
        rows = cur.execute(
            "SELECT id, customer_id, plan_code, starts_at, ends_at, created_at"
            " FROM subscriptions WHERE customer_id = %s ORDER BY starts_at, id",
            (id,),
        ).fetchall()
    return [Subscription(**row) for row in rows]


def subscription_at(
    id: str, at: datetime, *, conn: db.Connection | None = None
) -> Subscription | None:
    """The subscription of customer `id` in force at `at`, or None (before it started)."""
    when = _aware("at", at)
    for subscription in reversed(subscriptions(id, conn=conn)):
        if subscription.covers(when):
            return subscription
    return None


def _check_id(id: str) -> None:
    if not isinstance(id, str) or not _ID_PATTERN.fullmatch(id):
        raise InvalidInput(
            f"id: {id!r} is not a valid customer id (1-128 characters: letters, digits and"
            " _ . : @ + -, starting with a letter or digit)"
        )


def _check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        raise InvalidInput(f"timezone: {timezone!r} is not an IANA time zone") from exc


def _check_anchor_day(anchor_day: int | None) -> None:
    if anchor_day is None:
        return
    if isinstance(anchor_day, bool) or not isinstance(anchor_day, int):
        raise InvalidInput(f"anchor_day: {anchor_day!r} is not a day of the month (1-31)")
    if not 1 <= anchor_day <= 31:
        raise InvalidInput(f"anchor_day: {anchor_day} is not a day of the month (1-31)")


def _aware(field_name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{field_name}: {value!r} must be a timezone-aware datetime")
    return value


def _check_plan_exists(conn: db.Connection, plan_code: str) -> None:
    if conn.execute("SELECT 1 FROM plans WHERE code = %s LIMIT 1", (plan_code,)).fetchone() is None:
        raise InvalidInput(f"plan_code: unknown plan {plan_code!r}")
