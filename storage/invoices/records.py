"""The invoices table: stored invoices as `Invoice`, how they are read and locked.

`services.invoice_lifecycle` is the public API (it re-exports the readers); generation lives in
`services.invoicing` and the lifecycle in `services.invoice_lifecycle`; their writes in
`storage.invoices.writes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pricing.errors import echo
from pricing.invoicing import (
    readable,
    version_key,
)
from pricing.periods import Period
from storage import db
from storage.errors import InvalidInput, NotFound

_LOCK_NAMESPACE = "meterline.invoices"

COLUMNS = sql.SQL(
    "id, customer_id, period_start, period_end, period_label, timezone, status, number,"
    " plan_code, plan_version, currency, subtotal, tax, total, document, segments,"
    " rollup_versions, grace_until, created_at, updated_at, finalized_at, paid_at, voided_at,"
    " replaces, issued_details, due_date"
)


@dataclass(frozen=True)
class Invoice:
    """A stored invoice; `document` is its JSON as composed (lines, totals, segments)."""

    id: str
    customer_id: str
    period_start: datetime
    period_end: datetime
    period_label: str | None
    timezone: str
    status: str
    number: int | None
    plan_code: str
    plan_version: int
    currency: str
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    document: dict[str, Any]
    segments: list[dict[str, Any]]
    rollup_versions: dict[str, int]
    grace_until: datetime | None
    created_at: datetime
    updated_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    replaces: str | None
    issued_details: dict[str, Any] | None = None
    due_date: date | None = None

    def to_json(self) -> dict[str, Any]:
        """`meter invoices show --json`: the `meter quote --json` shape plus the invoice's
        identity, period and lifecycle."""
        doc = readable(self.document)
        return {
            "id": self.id,
            "number": self.number,
            "customer_id": self.customer_id,
            "period": self.period_label,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "timezone": self.timezone,
            "status": self.status,
            "plan": self.plan_code,
            "plan_version": self.plan_version,
            "currency": self.currency,
            "usage": doc.get("usage", {}),
            "lines": doc.get("lines", []),
            "subtotal": doc.get("subtotal"),
            "tax": doc.get("tax"),
            "total": doc.get("total"),
            "segments": doc.get("segments", []),
            "rollup_versions": self.rollup_versions,
            "grace_until": _iso(self.grace_until),
            "created_at": _iso(self.created_at),
            "finalized_at": _iso(self.finalized_at),
            "paid_at": _iso(self.paid_at),
            "voided_at": _iso(self.voided_at),
            "replaces": self.replaces,
            **self.issue_json(),
        }

    def issue_json(self) -> dict[str, Any]:
        """When it was issued and is due, under which terms, from whom to whom: fixed when
        the invoice is finalized (None while it is a draft, or for one finalized before these
        were recorded)."""
        details = self.issued_details or {}
        return {
            "issue_date": details.get("issue_date"),
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "payment_terms_days": details.get("payment_terms_days"),
            "seller": details.get("seller"),
            "bill_to": details.get("bill_to"),
        }


@dataclass(frozen=True)
class Known:
    """What an invoice is composed from, checked again under the lock before it is written:
    the rollup versions of the customer's segments up to the period's end, and the state of
    its other invoices (whose lines and versions say what was already billed)."""

    versions: dict[str, int]
    others: tuple[tuple[str, str, datetime], ...]


def get_invoice(invoice_id: str, *, conn: db.Connection | None = None) -> Invoice:
    """The invoice `invoice_id`; NotFound if there is none."""
    with db.transaction(conn) as tx:
        found = select_invoices(tx, "id = %s", (invoice_id,))
    if not found:
        raise NotFound(f"invoice_id: no invoice {echo(invoice_id)}")
    return found[0]


def resolve_invoice_id(text: str) -> str:
    """The id of the one invoice whose id is `text` or starts with it (as `git` takes a short
    commit hash); NotFound when none matches, InvalidInput when several do."""
    if not text:
        raise InvalidInput("invoice_id: must not be empty")
    with db.connection() as conn:
        if conn.execute("SELECT 1 FROM invoices WHERE id = %s", (text,)).fetchone():
            return text
        rows = conn.execute(
            "SELECT id FROM invoices WHERE starts_with(id, %s) ORDER BY id LIMIT %s",
            (text, _SHOWN_MATCHES + 1),
        ).fetchall()
        if len(rows) > 1:
            row = conn.execute(
                "SELECT count(*) FROM invoices WHERE starts_with(id, %s)", (text,)
            ).fetchone()
            assert row is not None  # noqa: S101 (invariant for mypy, not validation)
            shown = ", ".join(r[0] for r in rows[:_SHOWN_MATCHES])
            more = ", ..." if row[0] > _SHOWN_MATCHES else ""
            raise InvalidInput(
                f"invoice_id: prefix {text!r} matches {row[0]} invoices ({shown}{more});"
                " give more of the id"
            )
    if not rows:
        raise NotFound(f"invoice_id: no invoice {echo(text)}")
    return str(rows[0][0])


_SHOWN_MATCHES = 5


def find_invoice(customer_id: str, period_start: datetime) -> Invoice | None:
    """The live (not void) invoice of a customer × period, if there is one."""
    with db.connection() as conn:
        found = select_invoices(
            conn,
            "customer_id = %s AND period_start = %s AND status <> 'void'",
            (customer_id, period_start),
        )
    return found[0] if found else None


def list_invoices(
    *, customer_id: str | None = None, period_label: str | None = None, status: str | None = None
) -> list[Invoice]:
    """Invoices, oldest period first, optionally of one customer, period label or status."""
    with db.connection() as conn:
        return select_invoices(
            conn,
            "(%(customer)s::text IS NULL OR customer_id = %(customer)s)"
            " AND (%(label)s::text IS NULL OR period_label = %(label)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)",
            {"customer": customer_id, "label": period_label, "status": status},
        )


def first_draft_ending_after(customer_id: str, at: datetime) -> datetime | None:
    """The period start of the customer's earliest draft whose period ends after `at`."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT period_start FROM invoices WHERE customer_id = %s AND status = 'draft'"
            " AND period_end > %s ORDER BY period_start LIMIT 1",
            (customer_id, at),
        ).fetchone()
    return row[0] if row else None


def drafts_due(now: datetime) -> tuple[list[Invoice], dict[tuple[str, str], int]]:
    """The drafts whose grace period is over at `now`, in period order, and the current
    rollup version of every segment of their customers, by (customer id, version key)."""
    with db.connection() as conn:
        due = select_invoices(
            conn,
            "status = 'draft' AND grace_until <= %s",
            (now,),
            order="period_start, customer_id, created_at",
        )
        customers = sorted({invoice.customer_id for invoice in due})
        current: dict[tuple[str, str], int] = {}
        for customer_id, start, version in conn.execute(
            "SELECT customer_id, period_start, version FROM usage_periods"
            " WHERE customer_id = ANY(%s)",
            (customers,),
        ):
            current[(customer_id, version_key(start))] = int(version)
    return due, current


def lock_customer(conn: db.Connection, customer_id: str) -> None:
    """Serialize the writers of one customer's invoices (until the transaction ends)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, customer_id)
    )


def locked_invoice(conn: db.Connection, invoice_id: str) -> Invoice:
    row = conn.execute("SELECT customer_id FROM invoices WHERE id = %s", (invoice_id,)).fetchone()
    if row is None:
        raise NotFound(f"invoice_id: no invoice {echo(invoice_id)}")
    lock_customer(conn, row[0])
    return select_invoices(conn, "id = %s", (invoice_id,))[0]


def read_state(
    conn: db.Connection, customer_id: str, period: Period, *, lock: bool = False
) -> tuple[Invoice | None, Known, list[Invoice]]:
    """The period's live invoice, what it would be composed from, and the other invoices, in
    one round trip; with `lock`, after taking the customer's lock (held until commit)."""
    with conn.pipeline():
        if lock:
            lock_customer(conn, customer_id)
        invoice_rows = dict_cursor(conn).execute(
            sql.SQL(
                "SELECT {columns} FROM invoices WHERE customer_id = %s"
                " ORDER BY period_start, created_at"
            ).format(columns=COLUMNS),
            (customer_id,),
        )
        version_rows = conn.execute(
            "SELECT period_start, version FROM usage_periods"
            " WHERE customer_id = %s AND period_start < %s",
            (customer_id, period.end),
        )
    invoices = [Invoice(**row) for row in invoice_rows.fetchall()]
    live = next(
        (i for i in invoices if i.period_start == period.start and i.status != "void"), None
    )
    others = [i for i in invoices if i is not live]
    versions = {version_key(start): int(version) for start, version in version_rows.fetchall()}
    known = Known(versions, tuple((i.id, i.status, i.updated_at) for i in others))
    return live, known, others


def dict_cursor(conn: db.Connection) -> psycopg.Cursor[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row)


def select_invoices(
    conn: db.Connection,
    where: str,
    params: Any,
    *,
    order: str = "period_start, customer_id, created_at",
) -> list[Invoice]:
    query = sql.SQL("SELECT {columns} FROM invoices WHERE {where} ORDER BY {order}").format(
        columns=COLUMNS, where=sql.SQL(where), order=sql.SQL(order)
    )
    rows = dict_cursor(conn).execute(query, params).fetchall()
    return [Invoice(**row) for row in rows]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
