"""The credit_notes table: a credit note cancels a finalized invoice that was voided.

Which invoice gets one, and what it says, is decided by `services.credit_notes`; the number is
taken from the `credit_notes` counter row (see `storage.invoices.writes.next_number`) in the
transaction that voids the invoice, so the sequence has no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pricing.errors import echo
from storage import db
from storage.errors import NotFound

COLUMNS = sql.SQL(
    "id, number, invoice_id, customer_id, currency, subtotal, tax, total, reason, document,"
    " issued_at, issued_details"
)


@dataclass(frozen=True)
class CreditNote:
    """A stored credit note; `document` is its JSON (negated lines and totals)."""

    id: str
    number: int
    invoice_id: str
    customer_id: str
    currency: str
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    reason: str
    document: dict[str, Any]
    issued_at: datetime
    issued_details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """`meter invoices credit-note --json`: the stored document (it holds the totals, the
        lines and the invoice it cancels) with the credit note's identity first."""
        return {
            "id": self.id,
            "number": self.number,
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "issued_at": self.issued_at.isoformat(),
            "reason": self.reason,
            **{key: value for key, value in self.document.items() if key not in _IDENTITY},
            **self.issued_details,
        }


_IDENTITY = ("id", "number", "invoice_id", "customer_id", "currency", "issued_at", "reason")


def insert(conn: db.Connection, note: Mapping[str, Any]) -> CreditNote:
    """Store a credit note (keys: the columns); on the caller's transaction."""
    values = {
        **note,
        "document": Jsonb(dict(note["document"])),
        "issued_details": Jsonb(dict(note["issued_details"])),
    }
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "INSERT INTO credit_notes ({columns}) VALUES (%(id)s, %(number)s, %(invoice_id)s,"
                " %(customer_id)s, %(currency)s, %(subtotal)s, %(tax)s, %(total)s, %(reason)s,"
                " %(document)s, %(issued_at)s, %(issued_details)s) RETURNING {columns}"
            ).format(columns=COLUMNS),
            values,
        )
        .fetchone()
    )
    assert row is not None  # noqa: S101 (invariant for mypy, not validation)
    return CreditNote(**row)


def get_credit_note(key: str, *, conn: db.Connection | None = None) -> CreditNote:
    """The credit note whose id is `key`, whose number is `key` (`7` or `CN-7`), or which
    cancels the invoice `key`; NotFound if none."""
    number = key.upper().removeprefix("CN-")
    with db.transaction(conn) as tx:
        found = _select(
            tx,
            "id = %(key)s OR invoice_id = %(key)s OR (%(number)s ~ '^[0-9]{1,18}$'"
            " AND number = %(number)s::bigint)",
            {"key": key, "number": number},
        )
    if not found:
        raise NotFound(f"credit_note: no credit note {echo(key)}")
    return found[0]


def list_credit_notes(
    *, customer_id: str | None = None, conn: db.Connection | None = None
) -> list[CreditNote]:
    """Credit notes by number, optionally of one customer."""
    with db.transaction(conn) as tx:
        return _select(
            tx,
            "%(customer)s::text IS NULL OR customer_id = %(customer)s",
            {"customer": customer_id},
        )


def by_invoice(invoice_ids: Iterable[str]) -> dict[str, CreditNote]:
    """The credit notes of these invoices, by invoice id (one query)."""
    wanted = list(dict.fromkeys(invoice_ids))
    if not wanted:
        return {}
    with db.connection() as conn:
        found = _select(conn, "invoice_id = ANY(%(ids)s)", {"ids": wanted})
    return {note.invoice_id: note for note in found}


def _select(conn: db.Connection, where: str, params: Mapping[str, Any]) -> list[CreditNote]:
    query = sql.SQL("SELECT {columns} FROM credit_notes WHERE {where} ORDER BY number").format(
        columns=COLUMNS, where=sql.SQL(where)
    )
    rows = conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
    return [CreditNote(**row) for row in rows]
