"""Writing the invoices table: a draft stored or rewritten with its lines, a number taken from
the counter row, a status moved. Which of these may happen, and when, is decided by
`services.invoicing` and `services.invoice_lifecycle`; these run on the caller's connection,
inside its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pricing.invoicing import BilledLine, InvoiceDraft, InvoiceLine
from storage import db
from storage.analytics import revenue_months
from storage.invoices.records import COLUMNS, Invoice, dict_cursor, select_invoices

_NUMBER_SEQUENCE = "invoices"

# A new draft `replaces` the period's latest void invoice, if any.
_INSERT = sql.SQL("""
INSERT INTO invoices (id, customer_id, period_start, period_end, period_label, timezone,
    plan_code, plan_version, currency, subtotal, tax, total, document, segments,
    rollup_versions, grace_until, replaces)
VALUES (%(id)s, %(customer)s, %(start)s, %(end)s, %(label)s, %(timezone)s, %(plan)s,
    %(version)s, %(currency)s, %(subtotal)s, %(tax)s, %(total)s, %(document)s, %(segments)s,
    %(versions)s, %(grace)s,
    (SELECT id FROM invoices WHERE customer_id = %(customer)s AND period_start = %(start)s
     AND status = 'void' ORDER BY voided_at DESC NULLS LAST LIMIT 1))
RETURNING {columns}
""").format(columns=COLUMNS)

_UPDATE = sql.SQL("""
UPDATE invoices SET plan_code = %(plan)s, plan_version = %(version)s, currency = %(currency)s,
    subtotal = %(subtotal)s, tax = %(tax)s, total = %(total)s, document = %(document)s,
    segments = %(segments)s, rollup_versions = %(versions)s, updated_at = now()
WHERE id = %(id)s
RETURNING {columns}
""").format(columns=COLUMNS)

_BILLED_LINES = """
SELECT l.kind, l.detail->>'adjusts', l.metric, l.model, l.quantity, l.amount, l.segment_start
FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
WHERE i.customer_id = %(customer)s AND i.status <> 'void' AND i.period_start <> %(period)s
  AND ((l.invoice_id = %(earlier)s AND l.kind <> 'adjustment')
       OR (l.kind = 'adjustment' AND l.for_period_start = %(earlier_start)s))
"""

_NEXT_NUMBER = """
INSERT INTO invoice_numbers (name, last_number) VALUES (%s, 1)
ON CONFLICT (name) DO UPDATE SET last_number = invoice_numbers.last_number + 1
RETURNING last_number
"""


def write_draft(
    conn: db.Connection,
    invoice_id: str,
    draft: InvoiceDraft,
    document: Mapping[str, Any],
    *,
    grace_until: datetime,
    new: bool,
) -> psycopg.Cursor[dict[str, Any]]:
    """Insert (`new`) or rewrite the draft `invoice_id` and replace its lines, on `conn` (in
    the caller's pipeline and transaction). Returns the cursor whose row is the stored
    invoice: read it with `stored` once the transaction is committed."""
    values = {
        "id": invoice_id,
        "customer": draft.customer_id,
        "start": draft.period.start,
        "end": draft.period.end,
        "label": draft.period.label,
        "timezone": draft.period.timezone,
        "plan": draft.plan_code,
        "version": draft.plan_version,
        "currency": draft.currency,
        "subtotal": draft.subtotal,
        "tax": draft.tax,
        "total": draft.total,
        "document": Jsonb(dict(document)),
        "segments": Jsonb(document["segments"]),
        "versions": Jsonb(document["rollup_versions"]),
        "grace": grace_until,
    }
    written = dict_cursor(conn).execute(_INSERT if new else _UPDATE, values)
    if not new:
        conn.execute("DELETE FROM invoice_lines WHERE invoice_id = %s", (invoice_id,))
    _insert_lines(conn, invoice_id, draft.lines)
    return written


def stored(cursor: psycopg.Cursor[dict[str, Any]]) -> Invoice:
    """The invoice a `write_draft` cursor returned."""
    row = cursor.fetchone()
    assert row is not None  # noqa: S101 (invariant for mypy, not validation)
    return Invoice(**row)


def _insert_lines(conn: db.Connection, invoice_id: str, lines: Sequence[InvoiceLine]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO invoice_lines (invoice_id, position, kind, metric, model, quantity,"
            " amount, detail, segment_start, for_period_start)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    invoice_id,
                    position,
                    line.kind,
                    line.metric,
                    line.model,
                    line.quantity,
                    line.amount,
                    Jsonb(dict(line.document)),
                    line.segment_start,
                    line.for_period_start,
                )
                for position, line in enumerate(lines, start=1)
            ],
        )


def billed_lines(customer_id: str, earlier: Invoice, period_start: datetime) -> list[BilledLine]:
    """What live invoices other than the one of `period_start` billed for the `earlier`
    invoice's period: its own lines, and the adjustments later invoices made to it."""
    params = {
        "customer": customer_id,
        "period": period_start,
        "earlier": earlier.id,
        "earlier_start": earlier.period_start,
    }
    with db.connection() as conn:
        rows = conn.execute(_BILLED_LINES, params).fetchall()
    return [
        BilledLine(
            segment_start=segment_start,
            kind=adjusts if kind == "adjustment" else kind,
            metric=metric,
            model=model,
            quantity=quantity or Decimal(0),
            amount=amount,
        )
        for kind, adjusts, metric, model, quantity, amount, segment_start in rows
    ]


def next_number(conn: db.Connection, sequence: str = _NUMBER_SEQUENCE) -> int:
    """The next number of `sequence` ("invoices", "credit_notes"), from its counter row,
    whose lock is held until `conn`'s transaction ends: numbers are taken one after the
    other, and a rollback gives it back."""
    row = conn.execute(_NEXT_NUMBER, (sequence,)).fetchone()
    assert row is not None  # noqa: S101 (invariant for mypy, not validation)
    return int(row[0])


def set_finalized(
    conn: db.Connection,
    invoice_id: str,
    number: int,
    at: datetime,
    *,
    issued_details: Mapping[str, Any] | None = None,
    due_date: date | None = None,
) -> Invoice:
    """Make the invoice final with `number`, issued at `at`, with the parties and terms it is
    issued with and its due date; the revenue pre-aggregates count it from now on."""
    conn.execute(
        "UPDATE invoices SET status = 'finalized', number = %s, finalized_at = %s,"
        " issued_details = %s, due_date = %s, updated_at = now() WHERE id = %s",
        (
            number,
            at,
            Jsonb(dict(issued_details)) if issued_details is not None else None,
            due_date,
            invoice_id,
        ),
    )
    revenue_months.add(conn, invoice_id)
    return select_invoices(conn, "id = %s", (invoice_id,))[0]


def set_status(
    conn: db.Connection, invoice_id: str, status: str, stamp: str, at: datetime
) -> Invoice:
    """Move the invoice to `status`, its `stamp` column (paid_at, voided_at) set to `at`. A
    void invoice leaves the revenue pre-aggregates (if it was counted: finalized or paid)."""
    if status == "void":
        revenue_months.take_away(conn, invoice_id)
    conn.execute(
        sql.SQL(
            "UPDATE invoices SET status = %s, {stamp} = %s, updated_at = now() WHERE id = %s"
        ).format(stamp=sql.Identifier(stamp)),
        (status, at, invoice_id),
    )
    return select_invoices(conn, "id = %s", (invoice_id,))[0]
