"""Customers and their subscription history: the rows.

A customer is billed in its own timezone, on calendar periods or on an anniversary day. Each plan
it has been on is a subscription row (`starts_at` inclusive, `ends_at` exclusive, NULL for the
current one), so that a period that straddles a plan change can be priced piece by piece.
`customers.plan_code` is the plan of the latest subscription. What may be created or changed,
and when, is decided by `services.customers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pricing.errors import echo
from storage import db
from storage.errors import NotFound
from storage.ledger import locks as ingest_locks

_COLUMNS = sql.SQL(
    "id, name, plan_code, timezone, anchor_day, starts_at, ends_at, metadata, created_at,"
    " billing_address, email, payment_terms_days"
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
    billing_address: str | None = None
    email: str | None = None
    payment_terms_days: int | None = None


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


def insert_customer(
    conn: db.Connection,
    id: str,
    plan_code: str,
    *,
    timezone: str,
    anchor_day: int | None,
    starts_at: datetime,
    name: str | None,
    metadata: Mapping[str, Any],
) -> Customer | None:
    """Insert the customer and its first subscription, on `conn`; None when the id is taken
    (then nothing is written)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "INSERT INTO customers (id, name, plan_code, timezone, anchor_day, starts_at,"
                " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING {columns}"
            ).format(columns=_COLUMNS),
            (id, name, plan_code, timezone, anchor_day, starts_at, Jsonb(dict(metadata))),
        )
        .fetchone()
    )
    if row is None:
        return None
    add_subscription(conn, id, plan_code, starts_at)
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


def locked(conn: db.Connection, id: str) -> tuple[Customer, list[Subscription]]:
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


def update_customer(
    conn: db.Connection, id: str, plan_code: str, ends_at: datetime | None, *, revision: bool
) -> Customer:
    """Set the customer's current plan and end; with `revision`, bump the history revision
    in the same transaction (batches classified before it classify again)."""
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
    assert row is not None  # noqa: S101 (invariant for mypy, not validation)
    return Customer(**row)


#: The billing details `update_details` may set (None leaves one as it is).
DETAIL_COLUMNS = ("name", "billing_address", "email", "payment_terms_days")


def update_details(conn: db.Connection, id: str, changes: Mapping[str, Any]) -> Customer:
    """Set the billing details in `changes` (keys of DETAIL_COLUMNS; a value of None clears
    it); NotFound if there is no customer `id`."""
    if not changes:
        return get_customer(id, conn=conn)
    assert set(changes) <= set(DETAIL_COLUMNS), changes  # noqa: S101 (invariant for mypy, not validation)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(key), sql.Placeholder(key)) for key in changes
    )
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "UPDATE customers SET {assignments} WHERE id = %(id)s RETURNING {columns}"
            ).format(assignments=assignments, columns=_COLUMNS),
            {**changes, "id": id},
        )
        .fetchone()
    )
    if row is None:
        raise NotFound(f"id: no customer {echo(id)}")
    return Customer(**row)


def end_subscription(conn: db.Connection, subscription_id: int, at: datetime) -> None:
    conn.execute("UPDATE subscriptions SET ends_at = %s WHERE id = %s", (at, subscription_id))


def add_subscription(
    conn: db.Connection,
    customer_id: str,
    plan_code: str,
    starts_at: datetime,
    ends_at: datetime | None = None,
) -> None:
    conn.execute(
        "INSERT INTO subscriptions (customer_id, plan_code, starts_at, ends_at)"
        " VALUES (%s, %s, %s, %s)",
        (customer_id, plan_code, starts_at, ends_at),
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
