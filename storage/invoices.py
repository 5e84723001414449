"""Invoices: one per customer × billing period, computed from the durable rollups (never Redis).

Generating is idempotent. The inputs (rollup snapshots, the customer's other invoices) are read
and the invoice composed with no lock held; then it is written in one short transaction under a
per-customer advisory lock, after checking that those inputs have not changed meanwhile (else it
starts over). A draft is recomputed in place; a finalized, paid or void invoice never changes.
The partial unique index on (customer_id, period_start) WHERE status <> 'void' backs this up:
one live invoice per customer × period, whatever the retries. Numbers are given at finalization
from one counter row updated in the same transaction as the status, so a rollback leaves no gap.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pricing.invoicing import (
    BilledLine,
    InvoiceDraft,
    InvoiceLine,
    PricedSegment,
    adjustment_lines,
    compose,
    price_segment,
    readable,
    version_key,
)
from pricing.metering import Segment, segment_usage
from pricing.periods import Period, billing_period
from storage import db, rollups
from storage.catalog import CustomerContext, catalog, read_contexts
from storage.errors import Conflict, InvalidInput, NotFound
from storage.settings import get_settings

#: How many times `generate` composes again when its inputs changed while it composed.
_COMPOSE_ATTEMPTS = 5
_LOCK_NAMESPACE = "meterline.invoices"
_NUMBER_SEQUENCE = "invoices"

_COLUMNS = sql.SQL(
    "id, customer_id, period_start, period_end, period_label, timezone, status, number,"
    " plan_code, plan_version, currency, subtotal, tax, total, document, segments,"
    " rollup_versions, grace_until, created_at, updated_at, finalized_at, paid_at, voided_at,"
    " replaces"
)

_NEXT_NUMBER = """
INSERT INTO invoice_numbers (name, last_number) VALUES (%s, 1)
ON CONFLICT (name) DO UPDATE SET last_number = invoice_numbers.last_number + 1
RETURNING last_number
"""

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
""").format(columns=_COLUMNS)

_UPDATE = sql.SQL("""
UPDATE invoices SET plan_code = %(plan)s, plan_version = %(version)s, currency = %(currency)s,
    subtotal = %(subtotal)s, tax = %(tax)s, total = %(total)s, document = %(document)s,
    segments = %(segments)s, rollup_versions = %(versions)s, updated_at = now()
WHERE id = %(id)s
RETURNING {columns}
""").format(columns=_COLUMNS)

_BILLED_LINES = """
SELECT l.kind, l.detail->>'adjusts', l.metric, l.model, l.quantity, l.amount, l.segment_start
FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
WHERE i.customer_id = %(customer)s AND i.status <> 'void' AND i.period_start <> %(period)s
  AND ((l.invoice_id = %(earlier)s AND l.kind <> 'adjustment')
       OR (l.kind = 'adjustment' AND l.for_period_start = %(earlier_start)s))
"""


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
        }


@dataclass(frozen=True)
class _Known:
    """What an invoice is composed from, checked again under the lock before it is written:
    the rollup versions of the customer's segments up to the period's end, and the state of
    its other invoices (whose lines and versions say what was already billed)."""

    versions: dict[str, int]
    others: tuple[tuple[str, str, datetime], ...]


# --- reading ------------------------------------------------------------------------------


def get_invoice(invoice_id: str, *, conn: db.Connection | None = None) -> Invoice:
    """The invoice `invoice_id`; NotFound if there is none."""
    with db.transaction(conn) as tx:
        found = _select(tx, "id = %s", (invoice_id,))
    if not found:
        raise NotFound(f"invoice_id: no invoice {invoice_id!r}")
    return found[0]


def find_invoice(customer_id: str, period_start: datetime) -> Invoice | None:
    """The live (not void) invoice of a customer × period, if there is one."""
    with db.connection() as conn:
        found = _select(
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
        return _select(
            conn,
            "(%(customer)s::text IS NULL OR customer_id = %(customer)s)"
            " AND (%(label)s::text IS NULL OR period_label = %(label)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)",
            {"customer": customer_id, "label": period_label, "status": status},
        )


def period_of(context: CustomerContext, period_start: datetime) -> Period:
    """The customer's billing period that starts at `period_start`; InvalidInput otherwise."""
    interval = billing_interval(context, period_start)
    period = billing_period(
        period_start, timezone=context.timezone, anchor_day=context.anchor_day, interval=interval
    )
    if period.start != period_start:
        raise InvalidInput(
            f"period_start: {period_start.isoformat()} is not the start of a billing period of"
            f" customer {context.customer_id!r} (the period around it starts"
            f" {period.start.isoformat()})"
        )
    return period


def customer_context(customer_id: str, *, conn: db.Connection | None = None) -> CustomerContext:
    """The customer and its subscriptions, fresh; NotFound if there is none."""
    with db.transaction(conn) as tx:
        context = read_contexts(tx, [customer_id]).get(customer_id)
    if context is None:
        raise NotFound(f"customer_id: no customer {customer_id!r}")
    return context


# --- generating ---------------------------------------------------------------------------


def generate(
    customer_id: str,
    period_start: datetime,
    *,
    now: datetime | None = None,
    on_written: Callable[[db.Connection, str], None] | None = None,
) -> Invoice:
    """The invoice of a customer × ended period: created as a draft, or a draft recomputed in
    place; an invoice already finalized or paid is returned unchanged. A void invoice no longer
    counts: generating again issues a new one that `replaces` it.

    `on_written(conn, invoice_id)` runs in the transaction that stores the invoice, when one
    does: the caller's bookkeeping then commits with the invoice, or not at all.
    """
    now = now or datetime.now(UTC)
    for _ in range(_COMPOSE_ATTEMPTS):
        with db.connection() as conn:
            context = customer_context(customer_id, conn=conn)
            period = period_of(context, period_start)
            if period.end > now:
                raise InvalidInput(
                    f"period {period.label} of customer {customer_id!r} has not ended"
                    f" (it ends {period.end.isoformat()})"
                )
            live, known, others = _read_state(conn, customer_id, period)
        if live is not None and live.status != "draft":
            return live
        draft = _compose(context, period, known, others)
        invoice = _write(draft, known, on_written)
        if invoice is not None:
            return invoice
    raise Conflict(
        f"customer {customer_id!r} period {period.label}: usage kept changing while the"
        " invoice was computed; try again"
    )


def refresh_after_late_usage(
    customer_id: str, segment_start: datetime, *, now: datetime | None = None
) -> Invoice | None:
    """Late usage arrived for a segment that has ended: recompute the draft it affects.

    That is the draft of the segment's own period, or, when that invoice is already final, the
    customer's next draft (which bills the difference as an adjustment). None when there is no
    such draft: an invoice generated later will include it anyway.
    """
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT period_start FROM invoices WHERE customer_id = %s AND status = 'draft'"
            " AND period_end > %s ORDER BY period_start LIMIT 1",
            (customer_id, segment_start),
        ).fetchall()
    if not rows:
        return None
    return generate(customer_id, rows[0][0], now=now)


def _compose(
    context: CustomerContext, period: Period, known: _Known, others: Sequence[Invoice]
) -> InvoiceDraft:
    segments = catalog.segments(context, period)
    if not segments:
        raise InvalidInput(f"customer {context.customer_id!r} has no plan in period {period.label}")
    priced = [_priced(context.customer_id, segment) for segment in segments]
    adjustments, rerated_versions = _adjustments(context, period, known, others)
    try:
        return compose(context.customer_id, period, priced, adjustments, rerated_versions)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _priced(customer_id: str, segment: Segment) -> PricedSegment:
    """A segment's usage from its rollups, with the same function the live estimate uses."""
    snap = rollups.snapshot(customer_id, segment.start)
    plan = segment.plan
    counts = {
        key: len(snap.uniques.get(key, ()))
        for key, metric in plan.metrics.items()
        if metric.aggregation == "unique_count"
    }
    usage, results = segment_usage(plan, snap.state, counts, segment)
    return PricedSegment(segment, usage, results, snap.version)


def _adjustments(
    context: CustomerContext, period: Period, known: _Known, others: Sequence[Invoice]
) -> tuple[list[InvoiceLine], dict[str, int]]:
    """Adjustment lines for earlier periods whose final invoice has been overtaken by late
    usage: a segment whose rollup version is above the highest version any live invoice
    priced for it. Returns the lines and the versions they priced."""
    billed_versions: dict[str, int] = {}
    for other in others:
        if other.status != "void":
            for key, version in other.rollup_versions.items():
                billed_versions[key] = max(billed_versions.get(key, 0), int(version))
    lines: list[InvoiceLine] = []
    versions: dict[str, int] = {}
    for earlier in others:
        if earlier.status not in ("finalized", "paid") or earlier.period_start >= period.start:
            continue
        segments = _recorded_segments(context, earlier)
        if all(
            known.versions.get(version_key(s.start), 0)
            <= billed_versions.get(version_key(s.start), 0)
            for s in segments
        ):
            continue
        priced = [_priced(context.customer_id, segment) for segment in segments]
        rerated = [line for p in priced for line in price_segment(p, name_plan=True)]
        billed = _billed_lines(context.customer_id, earlier, period)
        lines += adjustment_lines(segments[0].period, rerated, billed)
        versions.update({version_key(p.segment.start): p.rollup_version for p in priced})
    return lines, versions


def _recorded_segments(context: CustomerContext, invoice: Invoice) -> list[Segment]:
    """The segments an invoice priced, with the plan versions it priced them with."""
    found = []
    for recorded in invoice.segments:
        plan = catalog.plan_version(recorded["plan"], int(recorded["plan_version"]))
        period = billing_period(
            invoice.period_start,
            timezone=invoice.timezone,
            anchor_day=context.anchor_day,
            interval=plan.interval,
        )
        found.append(
            Segment(
                plan,
                int(recorded["plan_version"]),
                period,
                datetime.fromisoformat(recorded["start"]),
                datetime.fromisoformat(recorded["end"]),
                invoice.timezone,
            )
        )
    return found


def _billed_lines(customer_id: str, earlier: Invoice, period: Period) -> list[BilledLine]:
    """What live invoices other than `period`'s billed for the `earlier` invoice's period."""
    params = {
        "customer": customer_id,
        "period": period.start,
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


def _write(
    draft: InvoiceDraft,
    known: _Known,
    on_written: Callable[[db.Connection, str], None] | None = None,
) -> Invoice | None:
    """Store the draft unless its inputs changed since they were read (then None)."""
    document = json.loads(json.dumps(draft.to_json()))
    customer_id = draft.customer_id
    # One transaction in two round trips: lock and re-read, then write and commit. Leaving
    # early (nothing to write) commits the empty transaction, which releases the lock.
    with db.connection() as conn, conn.pipeline():
        live, known_now, _ = _read_state(conn, customer_id, draft.period, lock=True)
        if known_now != known or any(
            known.versions.get(key, 0) != version for key, version in draft.rollup_versions.items()
        ):
            return None
        if live is not None and (live.status != "draft" or live.document == document):
            return live
        invoice_id = live.id if live is not None else f"inv_{secrets.token_hex(8)}"
        values = {
            "id": invoice_id,
            "customer": customer_id,
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
            "document": Jsonb(document),
            "segments": Jsonb(document["segments"]),
            "versions": Jsonb(document["rollup_versions"]),
            "grace": draft.period.end
            + timedelta(seconds=get_settings().METER_INVOICE_GRACE_SECONDS),
        }
        written = _cursor(conn).execute(_INSERT if live is None else _UPDATE, values)
        if live is not None:
            conn.execute("DELETE FROM invoice_lines WHERE invoice_id = %s", (invoice_id,))
        _insert_lines(conn, invoice_id, draft.lines)
        if on_written is not None:
            on_written(conn, invoice_id)
        conn.commit()
    row = written.fetchone()
    assert row is not None
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


# --- lifecycle ----------------------------------------------------------------------------


def finalize(
    invoice_id: str, *, now: datetime | None = None, conn: db.Connection | None = None
) -> Invoice:
    """Give a draft the next invoice number and make it final (a no-op on a final invoice).

    The number comes from the counter row, whose lock is held until this transaction ends:
    finalizations take numbers one after the other, and a rollback gives the number back.
    """
    with db.transaction(conn) as tx:
        invoice = _locked(tx, invoice_id)
        if invoice.status in ("finalized", "paid"):
            return invoice
        if invoice.status == "void":
            raise Conflict(f"invoice {invoice_id!r} is void: it cannot be finalized")
        row = tx.execute(_NEXT_NUMBER, (_NUMBER_SEQUENCE,)).fetchone()
        assert row is not None
        tx.execute(
            "UPDATE invoices SET status = 'finalized', number = %s, finalized_at = %s,"
            " updated_at = now() WHERE id = %s",
            (row[0], now or datetime.now(UTC), invoice_id),
        )
        return _select(tx, "id = %s", (invoice_id,))[0]


def finalize_due(now: datetime | None = None) -> list[Invoice]:
    """Finalize every draft whose grace period is over, in period order.

    A draft whose rollups moved since it was computed (late usage whose refresh has not run)
    is recomputed first, so what becomes final is what the rollups say.
    """
    now = now or datetime.now(UTC)
    with db.connection() as conn:
        due = _select(
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
    finalized = []
    for invoice in due:
        target = invoice
        if _is_stale(invoice, current):
            target = generate(invoice.customer_id, invoice.period_start, now=now)
        if target.status == "draft":
            finalized.append(finalize(target.id, now=now))
    return finalized


def _is_stale(invoice: Invoice, current: dict[tuple[str, str], int]) -> bool:
    """Whether a segment of the invoice has a rollup version above the one it priced."""
    for recorded in invoice.segments:
        key = version_key(datetime.fromisoformat(recorded["start"]))
        if current.get((invoice.customer_id, key), 0) > int(invoice.rollup_versions.get(key, 0)):
            return True
    return False


def mark_paid(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """A finalized invoice has been paid (a no-op when it already is)."""
    return _transition(invoice_id, "paid", ("finalized",), "paid_at", now)


def void(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """Cancel a draft or finalized invoice; it keeps its number, and its customer × period
    can be invoiced again (`reissue`). A paid invoice cannot be voided."""
    return _transition(invoice_id, "void", ("draft", "finalized"), "voided_at", now)


def reissue(invoice_id: str, *, now: datetime | None = None) -> Invoice:
    """A new invoice for the period of a void one (the live one, if it was reissued already)."""
    invoice = get_invoice(invoice_id)
    if invoice.status != "void":
        raise Conflict(
            f"invoice {invoice_id!r} is {invoice.status}: only a void invoice can be reissued"
        )
    return generate(invoice.customer_id, invoice.period_start, now=now)


def _transition(
    invoice_id: str, status: str, allowed: tuple[str, ...], stamp: str, now: datetime | None
) -> Invoice:
    with db.connection() as conn, conn.transaction():
        invoice = _locked(conn, invoice_id)
        if invoice.status == status:
            return invoice
        if invoice.status not in allowed:
            raise Conflict(
                f"invoice {invoice_id!r} is {invoice.status}: it cannot become {status}"
                f" (only from {' or '.join(allowed)})"
            )
        conn.execute(
            sql.SQL(
                "UPDATE invoices SET status = %s, {stamp} = %s, updated_at = now() WHERE id = %s"
            ).format(stamp=sql.Identifier(stamp)),
            (status, now or datetime.now(UTC), invoice_id),
        )
        return _select(conn, "id = %s", (invoice_id,))[0]


# --- helpers ------------------------------------------------------------------------------


def _lock_customer(conn: db.Connection, customer_id: str) -> None:
    """Serialize the writers of one customer's invoices (until the transaction ends)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, customer_id)
    )


def _locked(conn: db.Connection, invoice_id: str) -> Invoice:
    row = conn.execute("SELECT customer_id FROM invoices WHERE id = %s", (invoice_id,)).fetchone()
    if row is None:
        raise NotFound(f"invoice_id: no invoice {invoice_id!r}")
    _lock_customer(conn, row[0])
    return _select(conn, "id = %s", (invoice_id,))[0]


def _read_state(
    conn: db.Connection, customer_id: str, period: Period, *, lock: bool = False
) -> tuple[Invoice | None, _Known, list[Invoice]]:
    """The period's live invoice, what it would be composed from, and the other invoices, in
    one round trip; with `lock`, after taking the customer's lock (held until commit)."""
    with conn.pipeline():
        if lock:
            _lock_customer(conn, customer_id)
        invoice_rows = _cursor(conn).execute(
            sql.SQL(
                "SELECT {columns} FROM invoices WHERE customer_id = %s"
                " ORDER BY period_start, created_at"
            ).format(columns=_COLUMNS),
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
    known = _Known(versions, tuple((i.id, i.status, i.updated_at) for i in others))
    return live, known, others


def _cursor(conn: db.Connection) -> psycopg.Cursor[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row)


def _select(
    conn: db.Connection,
    where: str,
    params: Any,
    *,
    order: str = "period_start, customer_id, created_at",
) -> list[Invoice]:
    query = sql.SQL("SELECT {columns} FROM invoices WHERE {where} ORDER BY {order}").format(
        columns=_COLUMNS, where=sql.SQL(where), order=sql.SQL(order)
    )
    rows = _cursor(conn).execute(query, params).fetchall()
    return [Invoice(**row) for row in rows]


def billing_interval(context: CustomerContext, at: datetime) -> str:
    """The billing interval of the plan the customer is on at `at` (or first was on)."""
    span = context.span_at(max(at, context.starts_at)) or (
        context.spans[0] if context.spans else None
    )
    return catalog.plan(span.plan_code)[0].interval if span else "month"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
