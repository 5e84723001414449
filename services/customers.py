"""Customers and their subscriptions: what may be created or changed, and when.

A customer id must be safe in Redis keys and URLs, a timezone an IANA zone, an anchor day a day
of the month. A plan change or a cancellation may reach back at most METER_BACKDATE_MAX_DAYS;
a change of currency only at a period boundary (one invoice, one currency); either one, when
it takes effect in the past, re-rates what it covers (`services.rerate`). The rows themselves
are `storage.catalog.customers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pricing.errors import echo
from pricing.periods import Period, billing_period
from services import rerate
from services.periods import billing_interval
from storage import db
from storage.catalog import customers as rows
from storage.catalog.cache import CustomerContext, catalog, read_contexts
from storage.catalog.customers import (
    Customer,
    Subscription,
    get_customer,
    get_customers,
    list_customers,
    subscriptions,
)
from storage.catalog.plans import plan_exists
from storage.errors import Conflict, InvalidInput
from storage.settings import get_settings

__all__ = [
    "Customer",
    "Subscription",
    "cancel",
    "change_plan",
    "create_customer",
    "get_customer",
    "get_customers",
    "list_customers",
    "status",
    "subscription_at",
    "subscriptions",
    "update_details",
]

# Ids end up in Redis keys inside a {hash tag} and in URLs: no braces, spaces or slashes.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")


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
        customer = rows.insert_customer(
            tx,
            id,
            plan_code,
            timezone=timezone,
            anchor_day=anchor_day,
            starts_at=start,
            name=name,
            metadata=metadata or {},
        )
        if customer is None:
            raise Conflict(f"id: customer {id!r} already exists")
    return customer


#: Longest accepted billing details (characters).
_DETAIL_LIMITS = {"name": 200, "billing_address": 1000, "email": 254}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def update_details(
    id: str,
    *,
    name: str | None = None,
    billing_address: str | None = None,
    email: str | None = None,
    payment_terms_days: int | None = None,
    clear: tuple[str, ...] = (),
) -> Customer:
    """Set a customer's billing details: what its invoices show (name, billing address,
    email) and its own payment terms in days (overriding its plan's and the seller's). A
    detail left None is kept; one named in `clear` is removed. Invoices already finalized
    keep the details they were issued with."""
    changes: dict[str, Any] = {key: None for key in clear}
    for key, value in (("name", name), ("billing_address", billing_address), ("email", email)):
        if value is not None:
            changes[key] = _check_text(key, value)
    if email is not None and not _EMAIL.fullmatch(email.strip()):
        raise InvalidInput(f"email: not an email address: {echo(email)}")
    if payment_terms_days is not None:
        if not 0 <= payment_terms_days <= 3650:
            raise InvalidInput("payment_terms_days: must be 0 to 3650 days")
        changes["payment_terms_days"] = payment_terms_days
    with db.transaction() as tx:
        return rows.update_details(tx, id, changes)


def _check_text(field: str, value: str) -> str:
    text = value.replace("\\n", "\n").strip()
    if not text:
        raise InvalidInput(f"{field}: must not be empty (use --clear {field} to remove it)")
    if len(text) > _DETAIL_LIMITS[field]:
        raise InvalidInput(f"{field}: at most {_DETAIL_LIMITS[field]} characters")
    if "\x00" in text:
        raise InvalidInput(f"{field}: must not contain NUL")
    return text


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
        customer, history = rows.locked(conn, id)
        _check_plan_exists(conn, plan_code)
        last = history[-1] if history else None
        ended = last is not None and last.ends_at is not None and last.ends_at <= when
        if last is not None and not ended and last.plan_code == plan_code:
            return customer
        if last is not None and not ended:
            _check_not_before(when, last)
        before = read_contexts(conn, [id])[id]
        _check_horizon(when, now)
        _check_currency(before, plan_code, when)
        if last is not None and not ended:
            rows.end_subscription(conn, last.id, when)
        rows.add_subscription(
            conn, id, plan_code, when, None if ended or last is None else last.ends_at
        )
        # A resubscription clears the end; a change before a planned end keeps it.
        updated = rows.update_customer(
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
        customer, history = rows.locked(conn, id)
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
        _check_not_before(when, last)
        _check_horizon(when, now)
        rows.end_subscription(conn, last.id, when)
        updated = rows.update_customer(conn, id, customer.plan_code, when, revision=True)
        rerating = rerate.rederive(conn, before, read_contexts(conn, [id])[id], when, now)
    rerate.settle(rerating, now=now)
    return updated


def status(customer: Customer, now: datetime | None = None) -> str:
    """'active', 'ending' (an end is set in the future) or 'cancelled'."""
    now = now or datetime.now(UTC)
    if customer.ends_at is None:
        return "active"
    return "ending" if customer.ends_at > now else "cancelled"


def subscription_at(
    id: str, at: datetime, *, conn: db.Connection | None = None
) -> Subscription | None:
    """The subscription of customer `id` in force at `at`, or None (before it started)."""
    when = _aware("at", at)
    for subscription in reversed(subscriptions(id, conn=conn)):
        if subscription.covers(when):
            return subscription
    return None


def _check_not_before(when: datetime, current: Subscription) -> None:
    if when < current.starts_at:
        raise InvalidInput(
            f"at: {when.isoformat()} is before the current subscription's start"
            f" {current.starts_at.isoformat()}"
        )


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
    if not plan_exists(conn, plan_code):
        raise InvalidInput(f"plan_code: unknown plan {echo(plan_code)}")
