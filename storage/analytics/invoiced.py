"""What was invoiced: finalized and paid invoices (never drafts, never voids), summed by month
and currency, and by plan, metric or customer.

The month of an invoice is its period's label ('YYYY-MM'); a yearly invoice ('YYYY') counts in
the local month its period starts. A voided invoice is left out and the invoice reissued for
its period counts, so a period is counted once. Adjustment lines (late usage for an earlier
period) count where they are invoiced: on the later invoice, in its month.

The reports read the pre-aggregates of migration 0017 (`storage.analytics.revenue_months`,
kept when an invoice is finalized or voided): one row per month × currency × customer × plan
(`_INVOICES`) and one per month × currency × line kind × metric (`_LINES`), each by a range of
its primary key; never an invoice, a line or a document. `billed` (the backtest's) reads one
period's invoices through the partial index `invoices_reported_idx`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from psycopg import sql

from storage import db

#: Memory a report's sorts and hashes may use (the server default, 4 MB, sends the join of a
#: year of invoice lines to disk). Set for the report's own transaction only.
REPORT_WORK_MEM = "64MB"


@contextmanager
def report() -> Iterator[db.Connection]:
    """A read-only transaction for one report (one snapshot for all its statements), with
    `REPORT_WORK_MEM` and without JIT
    compilation: a year of invoices is estimated costly enough for PostgreSQL to compile the
    query, which took 13.5 of the 18 s an MRR report ran on a loaded 2-core machine, for
    queries that run in well under a second without it."""
    with db.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(REPORT_WORK_MEM)))
        conn.execute("SET LOCAL jit = off")
        yield conn


#: The reported invoices of months %(first)s..%(last)s, one row per month × currency ×
#: customer × plan × months (1, or 12 for a yearly plan): `invoices`, `subtotal`, `tax`,
#: `total`, `base_fee` (its base fee lines), `lines` (all its lines). The pre-aggregate
#: `revenue_months` (`storage.analytics.revenue_months`), read by its primary key's range.
_INVOICES = sql.SQL("(SELECT * FROM revenue_months WHERE month BETWEEN %(first)s AND %(last)s)")

#: The reported invoice lines of months %(first)s..%(last)s per month × currency × kind ×
#: metric ('' for none): `lines`, `amount`, `quantity` (`revenue_month_lines`).
_LINES = sql.SQL("(SELECT * FROM revenue_month_lines WHERE month BETWEEN %(first)s AND %(last)s)")

#: What a line is about: its metric (usage lines and usage adjustments), else its kind
#: (base_fee, minimum_true_up, or an adjustment of one of them).
_SUBJECT = sql.SQL("CASE WHEN l.metric = '' THEN l.kind ELSE l.metric END")


class RevenueRow(NamedTuple):
    """Invoiced amounts of one month × currency × group (a plan, metric or customer; "" when
    not grouped). `tax` and `total` are known per invoice only: 0 when grouped by metric, where
    `invoices` counts the lines (an invoice has one line per metric, and one base fee per plan
    it was on in the period)."""

    month: str
    currency: str
    group: str
    invoices: int
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def revenue(first: str, last: str, by: str | None = None) -> list[RevenueRow]:
    """Invoiced revenue per month × currency (× plan, metric or customer), months first..last
    ('YYYY-MM', inclusive). By plan: the plan each invoice's period ended under."""
    if by == "metric":
        query = sql.SQL(
            "SELECT l.month, l.currency, {subject}, sum(l.lines), sum(l.amount), 0, 0"
            " FROM {lines} l GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).format(subject=_SUBJECT, lines=_LINES)
    else:
        group = {None: sql.SQL("''"), "customer": sql.SQL("i.customer_id")}.get(
            by, sql.SQL("i.plan_code")
        )
        query = sql.SQL(
            "SELECT i.month, i.currency, {group}, sum(i.invoices), sum(i.subtotal), sum(i.tax),"
            " sum(i.total) FROM {invoices} i GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).format(group=group, invoices=_INVOICES)
    with report() as conn:
        rows = conn.execute(query, {"first": first, "last": last}).fetchall()
    return [
        RevenueRow(r[0], r[1].strip(), r[2], int(r[3]), r[4], Decimal(r[5]), Decimal(r[6]))
        for r in rows
    ]


@dataclass(frozen=True)
class MrrRow:
    """MRR of one currency in one month, and its movements since the month before (amounts
    unrounded; contraction and churned as positive amounts)."""

    month: str
    currency: str
    customers: int
    mrr: Decimal
    previous: Decimal
    new: Decimal
    expansion: Decimal
    contraction: Decimal
    churned: Decimal
    new_customers: list[str]
    churned_customers: list[str]


#: MRR per customer × currency × month (`pricing.analytics` has the definition and the
#: reference implementation `mrr_by_customer`, which tests hold this to): per month, the base
#: fee lines invoiced for it plus the mean of the rest of the subtotal over the invoiced months
#: of the trailing window; a yearly invoice spread as a twelfth over its 12 months. Then each
#: customer's MRR in a month against the month before (window lag/lead: absent is 0).
_MRR = sql.SQL("""
WITH yearly AS (
    SELECT i.customer_id, i.currency, i.at, sum(i.base_fee) AS base, sum(i.lines) AS subtotal
    FROM {invoices} i WHERE i.months = 12
    GROUP BY i.customer_id, i.currency, i.at
), monthly AS (
    SELECT customer_id, currency, at, sum(base) AS base, sum(usage) AS usage FROM (
        SELECT i.customer_id, i.currency, i.at, i.base_fee, i.lines - i.base_fee
        FROM {invoices} i WHERE i.months = 1
        UNION ALL
        SELECT customer_id, currency, at + k, base / 12, (subtotal - base) / 12
        FROM yearly CROSS JOIN generate_series(0, 11) AS k
    ) spread (customer_id, currency, at, base, usage)
    GROUP BY 1, 2, 3
), mrr AS (
    SELECT customer_id, currency, at,
           base + avg(usage) OVER (PARTITION BY customer_id, currency ORDER BY at
                                   RANGE BETWEEN %(window)s PRECEDING AND CURRENT ROW) AS mrr
    FROM monthly
), linked AS (
    SELECT customer_id, currency, at, mrr,
           CASE WHEN lag(at) OVER w = at - 1 THEN lag(mrr) OVER w END AS before,
           lead(at) OVER w IS DISTINCT FROM at + 1 AS last_in_run
    FROM mrr WINDOW w AS (PARTITION BY customer_id, currency ORDER BY at)
), moved AS MATERIALIZED (
    SELECT customer_id, currency, at, now, before FROM (
        SELECT customer_id, currency, at, mrr AS now, coalesce(before, 0) AS before
        FROM linked
        UNION ALL
        SELECT customer_id, currency, at + 1, 0, mrr FROM linked WHERE last_in_run
    ) both_ends WHERE at BETWEEN %(first_at)s AND %(last_at)s
), totals AS (
    SELECT at, currency,
           count(*) FILTER (WHERE now > 0) AS customers, sum(now) AS now, sum(before) AS before,
           coalesce(sum(now) FILTER (WHERE before <= 0 AND now > 0), 0) AS new,
           coalesce(sum(now - before) FILTER (WHERE before > 0 AND now > before), 0) AS expansion,
           coalesce(sum(before - now) FILTER (WHERE now > 0 AND now < before), 0) AS contraction,
           coalesce(sum(before) FILTER (WHERE now <= 0 AND before > 0), 0) AS churned
    FROM moved GROUP BY at, currency
), named AS (
    SELECT at, currency,
           array_agg(customer_id ORDER BY customer_id) FILTER (WHERE now > 0) AS new,
           array_agg(customer_id ORDER BY customer_id) FILTER (WHERE now <= 0) AS churned
    FROM moved WHERE (before <= 0 AND now > 0) OR (now <= 0 AND before > 0)
    GROUP BY at, currency
)
SELECT to_char(make_date(t.at / 12, t.at %% 12 + 1, 1), 'YYYY-MM'), t.currency, t.customers,
       t.now, t.before, t.new, t.expansion, t.contraction, t.churned,
       coalesce(n.new, '{{}}'), coalesce(n.churned, '{{}}')
FROM totals t LEFT JOIN named n ON n.at = t.at AND n.currency = t.currency
ORDER BY t.at, t.currency
""")


def mrr(first: str, last: str, trailing: int) -> list[MrrRow]:
    """MRR and its movements per month × currency, months first..last; the invoices are read
    from early enough for the month before `first`, its trailing window and yearly plans."""
    first_at, last_at = _month_index(first), _month_index(last)
    earliest = first_at - 1 - max(trailing - 1, 11)
    params = {
        "first": _month_text(earliest),
        "last": last,
        "window": trailing - 1,
        "first_at": first_at,
        "last_at": last_at,
    }
    with report() as conn:
        rows = conn.execute(_MRR.format(invoices=_INVOICES), params).fetchall()
    return [
        MrrRow(
            month=r[0],
            currency=r[1].strip(),
            customers=int(r[2]),
            mrr=Decimal(r[3]),
            previous=Decimal(r[4]),
            new=Decimal(r[5]),
            expansion=Decimal(r[6]),
            contraction=Decimal(r[7]),
            churned=Decimal(r[8]),
            new_customers=list(r[9]),
            churned_customers=list(r[10]),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class TopCustomer:
    currency: str
    rank: int
    customer_id: str
    revenue: Decimal
    last: Decimal
    before: Decimal


_TOP = sql.SQL("""
WITH per AS (
    SELECT i.currency, i.customer_id,
           coalesce(sum(i.subtotal) FILTER (WHERE i.month >= %(shown)s), 0) AS revenue,
           coalesce(sum(i.subtotal) FILTER (WHERE i.month = %(last)s), 0) AS last,
           coalesce(sum(i.subtotal) FILTER (WHERE i.month = %(before)s), 0) AS before
    FROM {invoices} i GROUP BY 1, 2
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY currency ORDER BY {order} DESC, customer_id) AS rank
    FROM per
)
SELECT currency, rank, customer_id, revenue, last, before FROM ranked
WHERE rank <= %(top)s ORDER BY currency, rank
""")


def top_customers(first: str, last: str, before: str, *, by: str, top: int) -> list[TopCustomer]:
    """The `top` customers of each currency by revenue over months first..last, or by growth
    (revenue in `last` less revenue in `before`)."""
    order = sql.SQL("revenue") if by == "revenue" else sql.SQL("(last - before)")
    params = {"first": min(first, before), "last": last, "shown": first, "before": before}
    with report() as conn:
        rows = conn.execute(
            _TOP.format(invoices=_INVOICES, order=order), {**params, "top": top}
        ).fetchall()
    return [
        TopCustomer(r[0].strip(), int(r[1]), r[2], Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))
        for r in rows
    ]


def _month_index(month: str) -> int:
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def _month_text(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


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
    first..last (what `pricing.analytics.mrr_by_customer` takes)."""
    query = sql.SQL(
        "SELECT customer_id, month, currency, max(months), sum(base_fee),"
        " sum(subtotal) - sum(base_fee) FROM {invoices} i GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).format(invoices=_INVOICES)
    with report() as conn:
        rows = conn.execute(query, {"first": first, "last": last}).fetchall()
    return [
        CustomerMonth(r[0], r[1], r[2].strip(), int(r[3]), Decimal(r[4]), Decimal(r[5]))
        for r in rows
    ]


@dataclass(frozen=True)
class MetricLines:
    """Usage lines of one metric × currency over a range: how much was invoiced for it (all of
    it is for usage beyond the included allowance, which is priced at zero) and the quantity
    those lines priced; `invoices`, the lines (one per invoice and metric, usually)."""

    currency: str
    metric: str
    amount: Decimal
    quantity: Decimal
    invoices: int


def usage_lines(first: str, last: str) -> tuple[list[MetricLines], dict[str, Decimal]]:
    """Usage lines (and usage adjustments: the adjustment lines that name a metric) per metric
    × currency, months first..last; and the invoiced subtotal per currency."""
    params = {"first": first, "last": last}
    lines = sql.SQL(
        "SELECT l.currency, l.metric, sum(l.amount), sum(l.quantity), sum(l.lines)"
        " FROM {lines} l WHERE l.metric <> '' AND l.kind IN ('usage', 'adjustment')"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(lines=_LINES)
    totals = sql.SQL("SELECT i.currency, sum(i.subtotal) FROM {invoices} i GROUP BY 1").format(
        invoices=_INVOICES
    )
    with report() as conn:
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
    only = sql.SQL(" AND i.customer_id = ANY(%(ids)s)") if customer_ids else sql.SQL("")
    query = sql.SQL(
        "SELECT i.id, i.customer_id, i.status, i.currency, i.subtotal, i.tax, i.total,"
        " i.subtotal - coalesce(a.amount, 0)"
        " FROM invoices i LEFT JOIN (SELECT l.invoice_id, sum(l.amount) AS amount"
        "  FROM invoice_lines l JOIN invoices j ON j.id = l.invoice_id"
        "  WHERE j.period_label = %(label)s AND l.kind = 'adjustment' GROUP BY 1) a"
        " ON a.invoice_id = i.id"
        " WHERE i.period_label = %(label)s AND i.status <> 'void'{only}"
    ).format(only=only)
    with report() as conn:
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
