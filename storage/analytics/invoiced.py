"""What was invoiced: finalized and paid invoices (never drafts, never voids), summed by month
and currency, and by plan, metric or customer.

The month of an invoice is its period's label ('YYYY-MM'); a yearly invoice ('YYYY') counts in
the local month its period starts. A voided invoice is left out and the invoice reissued for
its period counts, so a period is counted once. Adjustment lines (late usage for an earlier
period) count where they are invoiced: on the later invoice, in its month.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import sql

from storage import db

#: The month an invoice counts in.
_MONTH = sql.SQL(
    "CASE WHEN length(i.period_label) = 7 THEN i.period_label"
    " ELSE to_char(i.period_start AT TIME ZONE i.timezone, 'YYYY-MM') END"
)

#: Finalized and paid invoices of the months first..last. Yearly labels ('YYYY') of the years
#: around are read too and kept only when their month falls in the range.
_IN_RANGE = sql.SQL(
    "i.status IN ('finalized', 'paid')"
    " AND (i.period_label BETWEEN %(first)s AND %(last)s"
    "      OR i.period_label BETWEEN left(%(first)s, 4) AND left(%(last)s, 4))"
)

#: What a line is about: its metric, else what it is (or adjusts): base_fee, minimum_true_up.
_SUBJECT = sql.SQL("coalesce(l.metric, l.detail->>'adjusts', l.kind)")

#: The plan that priced a line: named on the line when the period had several plans.
_LINE_PLAN = sql.SQL("coalesce(l.detail->>'plan', i.plan_code)")


@dataclass(frozen=True)
class RevenueRow:
    """Invoiced amounts of one month × currency × group (a plan, metric or customer; "" when
    not grouped). `tax` and `total` are known per invoice only: 0 when grouped by metric."""

    month: str
    currency: str
    group: str
    invoices: int
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def revenue(first: str, last: str, by: str | None = None) -> list[RevenueRow]:
    """Invoiced revenue per month × currency (× plan, metric or customer), months first..last
    ('YYYY-MM', inclusive)."""
    params = {"first": first, "last": last}
    if by in (None, "customer"):
        group = sql.SQL("''") if by is None else sql.SQL("i.customer_id")
        query = sql.SQL(
            "SELECT month, currency, grp, count(*), sum(subtotal), sum(tax), sum(total) FROM ("
            " SELECT {month} AS month, i.currency, {group} AS grp, i.subtotal, i.tax, i.total"
            " FROM invoices i WHERE {in_range}) t"
            " WHERE month BETWEEN %(first)s AND %(last)s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).format(month=_MONTH, group=group, in_range=_IN_RANGE)
    else:
        group = _SUBJECT if by == "metric" else _LINE_PLAN
        query = sql.SQL(
            "SELECT month, currency, grp, count(DISTINCT invoice_id), sum(amount), 0, 0 FROM ("
            " SELECT {month} AS month, i.currency, {group} AS grp, l.invoice_id, l.amount"
            " FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id WHERE {in_range}) t"
            " WHERE month BETWEEN %(first)s AND %(last)s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).format(month=_MONTH, group=group, in_range=_IN_RANGE)
    with db.connection() as conn:
        rows = conn.execute(query, params).fetchall()
    return [
        RevenueRow(r[0], r[1].strip(), r[2], int(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]))
        for r in rows
    ]


@dataclass(frozen=True)
class CustomerMonth:
    """One customer's invoiced amounts in one month: `recurring` the base fees, `usage` the
    rest of the subtotal (usage, minimum true-ups, adjustments); `months` how many months the
    invoice's period covers (12 for a yearly plan)."""

    customer_id: str
    month: str
    currency: str
    months: int
    recurring: Decimal
    usage: Decimal


def customer_months(first: str, last: str) -> list[CustomerMonth]:
    """Per customer × month × currency, the base fees and the rest of the subtotal, months
    first..last. A yearly invoice counts in the month its period starts (`months` = 12)."""
    query = sql.SQL(
        "SELECT customer_id, month, currency, max(months), sum(base), sum(subtotal) - sum(base)"
        " FROM ("
        " SELECT i.customer_id, {month} AS month, i.currency,"
        "  CASE WHEN length(i.period_label) = 7 THEN 1 ELSE 12 END AS months, i.subtotal,"
        "  coalesce((SELECT sum(l.amount) FROM invoice_lines l WHERE l.invoice_id = i.id"
        "            AND (l.kind = 'base_fee' OR (l.kind = 'adjustment'"
        "                 AND l.detail->>'adjusts' = 'base_fee'))), 0) AS base"
        " FROM invoices i WHERE {in_range}) t"
        " WHERE month BETWEEN %(first)s AND %(last)s"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).format(month=_MONTH, in_range=_IN_RANGE)
    with db.connection() as conn:
        rows = conn.execute(query, {"first": first, "last": last}).fetchall()
    return [
        CustomerMonth(r[0], r[1], r[2].strip(), int(r[3]), Decimal(r[4]), Decimal(r[5]))
        for r in rows
    ]


@dataclass(frozen=True)
class MetricLines:
    """Usage lines of one metric × currency over a range: how much was invoiced for it (all of
    it is for usage beyond the included allowance, which is priced at zero) and the quantity
    those lines priced."""

    currency: str
    metric: str
    amount: Decimal
    quantity: Decimal
    invoices: int


def usage_lines(first: str, last: str) -> tuple[list[MetricLines], dict[str, Decimal]]:
    """Usage lines (and usage adjustments) per metric × currency, months first..last; and the
    total invoiced subtotal per currency over the same invoices."""
    params = {"first": first, "last": last}
    lines = sql.SQL(
        "SELECT currency, metric, sum(amount), sum(quantity),"
        " count(DISTINCT invoice_id) FROM ("
        " SELECT {month} AS month, i.currency, l.metric, l.amount, l.invoice_id,"
        "  coalesce(l.quantity, 0) AS quantity"
        " FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id"
        " WHERE {in_range} AND l.metric IS NOT NULL"
        "  AND (l.kind = 'usage' OR l.detail->>'adjusts' = 'usage')) t"
        " WHERE month BETWEEN %(first)s AND %(last)s GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(month=_MONTH, in_range=_IN_RANGE)
    totals = sql.SQL(
        "SELECT currency, sum(subtotal) FROM ("
        " SELECT {month} AS month, i.currency, i.subtotal FROM invoices i WHERE {in_range}) t"
        " WHERE month BETWEEN %(first)s AND %(last)s GROUP BY 1"
    ).format(month=_MONTH, in_range=_IN_RANGE)
    with db.connection() as conn:
        found = conn.execute(lines, params).fetchall()
        subtotals = conn.execute(totals, params).fetchall()
    return (
        [MetricLines(r[0].strip(), r[1], Decimal(r[2]), Decimal(r[3]), int(r[4])) for r in found],
        {r[0].strip(): Decimal(r[1]) for r in subtotals},
    )


def billed(label: str, customer_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The live (not void) invoice of each customer for the period `label`: id, status,
    currency, subtotal, tax, total, and `own` (the subtotal less adjustment lines, which bill
    earlier periods)."""
    query = (
        "SELECT i.id, i.customer_id, i.status, i.currency, i.subtotal, i.tax, i.total,"
        " i.subtotal - coalesce((SELECT sum(l.amount) FROM invoice_lines l"
        "  WHERE l.invoice_id = i.id AND l.kind = 'adjustment'), 0)"
        " FROM invoices i WHERE i.period_label = %(label)s AND i.status <> 'void'"
        " AND (%(ids)s::text[] IS NULL OR i.customer_id = ANY(%(ids)s))"
    )
    with db.connection() as conn:
        rows = conn.execute(query, {"label": label, "ids": customer_ids}).fetchall()
    return {
        r[1]: {
            "invoice_id": r[0],
            "status": r[2],
            "currency": r[3].strip(),
            "subtotal": Decimal(r[4]),
            "tax": Decimal(r[5]),
            "total": Decimal(r[6]),
            "own": Decimal(r[7]),
        }
        for r in rows
    }
