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
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pricing.errors import echo
from pricing.periods import Period, billing_period
from services import rerate
from storage import db
from storage.catalog.cache import CustomerContext, catalog, read_contexts
from storage.errors import Conflict, InvalidInput, NotFound
from storage.invoices.records import billing_interval
from storage.ledger import locks as ingest_locks
from storage.settings import get_settings

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
        raise NotFound(f"id: no customer {echo(id)}")
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
    id: str, plan_code: str, at: datetime | None = None, *, now: datetime | None = None
) -> Customer:
    """Move customer `id` to `plan_code` from `at` (default `now`) on.

    Closes the current subscription at `at` and opens one on the new plan; the moment of the
    change belongs to the new plan. Moving to the plan it is already on changes nothing. A
    customer whose subscription has ended starts a new one at `at` (a resubscription; the
    periods in between are not billed). `at` may not precede the current subscription's start
    nor lie more than METER_BACKDATE_MAX_DAYS before `now`; a change of currency must take
    effect at a period boundary. A change in the past re-rates (see `services.rerate`): usage
    from `at` on moves to the new plan, drafts are recomputed and finalized periods get an
    adjustment on the next invoice.
    """
    now = _aware("now", now) if now is not None else datetime.now(UTC)
    when = _aware("at", at) if at is not None else now
    with db.connection() as conn, conn.transaction():
        customer, history = _locked(conn, id)
        _check_plan_exists(conn, plan_code)
        last = history[-1] if history else None
        ended = last is not None and last.ends_at is not None and last.ends_at <= when
        if last is not None and not ended and last.plan_code == plan_code:
            return customer
        if last is not None and not ended and when < last.starts_at:
            raise InvalidInput(
                f"at: {when.isoformat()} is before the current subscription's start"
                f" {last.starts_at.isoformat()}"
            )
        before = read_contexts(conn, [id])[id]
        _check_horizon(when, now)
        _check_currency(before, plan_code, when)
        if last is not None and not ended:
            conn.execute("UPDATE subscriptions SET ends_at = %s WHERE id = %s", (when, last.id))
        conn.execute(
            "INSERT INTO subscriptions (customer_id, plan_code, starts_at, ends_at)"
            " VALUES (%s, %s, %s, %s)",
            (id, plan_code, when, None if ended or last is None else last.ends_at),
        )
        # A resubscription clears the end; a change before a planned end keeps it.
        updated = _update_customer(
            conn, id, plan_code, None if ended else customer.ends_at, revision=True
        )
        rerating = rerate.rederive(conn, before, read_contexts(conn, [id])[id], when, now)
    rerate.settle(rerating, now=now)
    return updated


def cancel(
    id: str,
    at: datetime | None = None,
    *,
    at_period_end: bool = False,
    now: datetime | None = None,
) -> Customer:
    """End customer `id`'s subscription at `at` (default `now`), or at the end of its current
    billing period (`at_period_end`). Its base fee is prorated by local days up to the end,
    usage after the end is rejected (`no_subscription`) and periods after it get no invoice;
    `change_plan` after the end starts a new subscription. A subscription that is already
    ending may be given another end; one that has ended is a Conflict. Usage already accepted
    after the end is a refusal (InvalidInput), never dropped.
    """
    now = _aware("now", now) if now is not None else datetime.now(UTC)
    if at is not None and at_period_end:
        raise InvalidInput("at: give either a moment or at_period_end, not both")
    with db.connection() as conn, conn.transaction():
        customer, history = _locked(conn, id)
        if customer.ends_at is not None and customer.ends_at <= now:
            raise Conflict(
                f"id: the subscription of customer {id!r} ended at"
                f" {customer.ends_at.isoformat()}; change-plan starts a new one"
            )
        before = read_contexts(conn, [id])[id]
        if at_period_end:
            interval = catalog.plan(history[-1].plan_code)[0].interval
            when = billing_period(
                now, timezone=customer.timezone, anchor_day=customer.anchor_day, interval=interval
            ).end
        else:
            when = _aware("at", at) if at is not None else now
        last = history[-1]
        if when < last.starts_at:
            raise InvalidInput(
                f"at: {when.isoformat()} is before the current subscription's start"
                f" {last.starts_at.isoformat()}"
            )
        _check_horizon(when, now)
        conn.execute("UPDATE subscriptions SET ends_at = %s WHERE id = %s", (when, last.id))
        updated = _update_customer(conn, id, customer.plan_code, when, revision=True)
        rerating = rerate.rederive(conn, before, read_contexts(conn, [id])[id], when, now)
    rerate.settle(rerating, now=now)
    return updated


def status(customer: Customer, now: datetime | None = None) -> str:
    """'active', 'ending' (an end is set in the future) or 'cancelled'."""
    now = now or datetime.now(UTC)
    if customer.ends_at is None:
        return "active"
    return "ending" if customer.ends_at > now else "cancelled"


def _locked(conn: db.Connection, id: str) -> tuple[Customer, list[Subscription]]:
    """The customer and its history, locked against other history changes and against the
    ingest of its usage until the transaction ends (see `storage.ledger.locks`)."""
    ingest_locks.lock_for_change(conn, id)
    cur = conn.cursor(row_factory=dict_row)
    row = cur.execute(
        sql.SQL("SELECT {columns} FROM customers WHERE id = %s FOR UPDATE").format(
            columns=_COLUMNS
        ),
        (id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"id: no customer {echo(id)}")
    return Customer(**row), subscriptions(id, conn=conn)


def _update_customer(
    conn: db.Connection, id: str, plan_code: str, ends_at: datetime | None, *, revision: bool
) -> Customer:
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "UPDATE customers SET plan_code = %s, ends_at = %s WHERE id = %s"
                " RETURNING {columns}"
            ).format(columns=_COLUMNS),
            (plan_code, ends_at, id),
        )
        .fetchone()
    )
    if revision:
        ingest_locks.bump_revision(conn)
    assert row is not None
    return Customer(**row)


def _check_horizon(when: datetime, now: datetime) -> None:
    days = get_settings().backdate_max_days
    if when < now - timedelta(days=days):
        raise InvalidInput(
            f"at: {when.isoformat()} is more than {days} days before now ({now.isoformat()});"
            " a change may take effect at most METER_BACKDATE_MAX_DAYS days back"
        )


def _check_currency(context: CustomerContext, plan_code: str, when: datetime) -> None:
    """One invoice has one currency: a plan in another currency may only start at a boundary
    of the customer's billing periods (local midnight at a period start)."""
    currency = catalog.plan(plan_code)[0].currency
    interval = billing_interval(context, when)
    period = billing_period(
        when, timezone=context.timezone, anchor_day=context.anchor_day, interval=interval
    )
    if period.start == when:
        return
    earlier = Period(period.start, when, context.timezone)
    for segment in catalog.segments(context, earlier):
        other = segment.plan.currency
        if other != currency:
            raise InvalidInput(
                f"at: {when.isoformat()} would bill {other} and {currency} in the period"
                f" {period.label}; a change of currency must take effect at a period boundary"
                f" (the next one is {period.end.isoformat()})"
            )


def subscriptions(id: str, *, conn: db.Connection | None = None) -> list[Subscription]:
    """The subscription history of customer `id`, oldest first; NotFound if no such customer."""
    with db.transaction(conn) as tx:
        cur = tx.cursor(row_factory=dict_row)
        if cur.execute("SELECT 1 FROM customers WHERE id = %s", (id,)).fetchone() is None:
            raise NotFound(f"id: no customer {echo(id)}")
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
            f"id: {echo(id)} is not a valid customer id (1-128 characters: letters, digits and"
            " _ . : @ + -, starting with a letter or digit)"
        )


def _check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        raise InvalidInput(f"timezone: {echo(timezone)} is not an IANA time zone") from exc


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
        raise InvalidInput(f"plan_code: unknown plan {echo(plan_code)}")
