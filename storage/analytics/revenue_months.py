"""The revenue reports' pre-aggregates (migration 0017), kept in step with the invoices.

`revenue_months` holds, per month × currency × customer × plan × months (1, or 12 for a
yearly invoice), what the reported invoices (finalized and paid) of that month add up to;
`revenue_month_lines`, per month × currency × line kind × metric, what their lines add up to.
An invoice's amounts are added in the transaction that finalizes it and taken away in the one
that voids it (`storage.invoices.writes`), under the invoice's row lock: each transition
happens once, so each invoice is counted once or not at all. A paid invoice stays counted.

The month of an invoice is its period's label ('YYYY-MM'); a yearly invoice ('YYYY') counts in
the local month its period starts. `recomputed` derives both tables from the invoices, for the
tests that hold the kept rows to it and for `rebuild` (what the migration's backfill does).
"""

from __future__ import annotations

from typing import Any

from storage import db

#: The month an invoice counts in, and how many months its period covers.
_MONTH = (
    "CASE WHEN length(i.period_label) = 4"
    " THEN to_char(i.period_start AT TIME ZONE i.timezone, 'YYYY-MM')"
    " ELSE i.period_label END"
)
_MONTHS = "CASE WHEN length(i.period_label) = 4 THEN 12 ELSE 1 END"
_REPORTED = "i.status IN ('finalized', 'paid')"

_INVOICE_ROWS = f"""
SELECT {_MONTH}, i.currency, i.customer_id, i.plan_code, {_MONTHS},
       count(*) * %(sign)s, sum(i.subtotal) * %(sign)s, sum(i.tax) * %(sign)s,
       sum(i.total) * %(sign)s, coalesce(sum(l.base_fee), 0) * %(sign)s,
       coalesce(sum(l.lines), 0) * %(sign)s
FROM invoices i
LEFT JOIN (SELECT invoice_id, sum(amount) FILTER (WHERE kind = 'base_fee') AS base_fee,
                  sum(amount) AS lines
           FROM invoice_lines {{lines_of}} GROUP BY invoice_id) l ON l.invoice_id = i.id
WHERE {_REPORTED} {{one}}
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
"""  # noqa: S608 (constant SQL text; values are parameters)

_LINE_ROWS = f"""
SELECT {_MONTH}, i.currency, l.kind, coalesce(l.metric, ''), count(*) * %(sign)s,
       sum(l.amount) * %(sign)s, sum(coalesce(l.quantity, 0)) * %(sign)s
FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
WHERE {_REPORTED} {{one}}
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""  # noqa: S608 (constant SQL text; values are parameters)

# Rows are added in key order, so two transactions that touch the same rows lock them in the
# same order (no deadlock); a row whose count falls to 0 is deleted.
_ADD_INVOICE = f"""
INSERT INTO revenue_months AS r (month, currency, customer_id, plan_code, months, invoices,
                                 subtotal, tax, total, base_fee, lines)
{_INVOICE_ROWS}
ON CONFLICT (month, currency, customer_id, plan_code, months) DO UPDATE SET
    invoices = r.invoices + excluded.invoices, subtotal = r.subtotal + excluded.subtotal,
    tax = r.tax + excluded.tax, total = r.total + excluded.total,
    base_fee = r.base_fee + excluded.base_fee, lines = r.lines + excluded.lines
RETURNING month, currency, customer_id, plan_code, months, invoices
"""

_ADD_LINES = f"""
INSERT INTO revenue_month_lines AS r (month, currency, kind, metric, lines, amount, quantity)
{_LINE_ROWS}
ON CONFLICT (month, currency, kind, metric) DO UPDATE SET
    lines = r.lines + excluded.lines, amount = r.amount + excluded.amount,
    quantity = r.quantity + excluded.quantity
RETURNING month, currency, kind, metric, lines
"""

_DROP_INVOICE_ROW = (
    "DELETE FROM revenue_months WHERE (month, currency, customer_id, plan_code, months)"
    " = (%s, %s, %s, %s, %s) AND invoices = 0"
)
_DROP_LINE_ROW = (
    "DELETE FROM revenue_month_lines WHERE (month, currency, kind, metric) = (%s, %s, %s, %s)"
    " AND lines = 0"
)
#: The statements for one invoice, and for every invoice (`rebuild`, `recomputed`).
_ONE = {"lines_of": "WHERE invoice_id = %(id)s", "one": "AND i.id = %(id)s"}
_ALL = {"lines_of": "", "one": ""}


def add(conn: db.Connection, invoice_id: str) -> None:
    """Count the invoice `invoice_id` in the pre-aggregates (in the caller's transaction, right
    after it became finalized; nothing if it is not finalized or paid)."""
    _apply(conn, invoice_id, 1)


def take_away(conn: db.Connection, invoice_id: str) -> None:
    """Stop counting the invoice `invoice_id` (in the caller's transaction, before it becomes
    void; nothing if it was not counted: a draft)."""
    _apply(conn, invoice_id, -1)


def _apply(conn: db.Connection, invoice_id: str, sign: int) -> None:
    params = {"id": invoice_id, "sign": sign}
    rows = conn.execute(_ADD_INVOICE.format(**_ONE), params).fetchall()
    lines = conn.execute(_ADD_LINES.format(**_ONE), params).fetchall()
    for row in rows:
        if row[-1] == 0:
            conn.execute(_DROP_INVOICE_ROW, row[:-1])
    for row in lines:
        if row[-1] == 0:
            conn.execute(_DROP_LINE_ROW, row[:-1])


def rebuild(conn: db.Connection) -> None:
    """Recompute both tables from the invoices (what migration 0017's backfill does); for data
    written around `add` and `take_away` (the analytics benchmark seeds invoices in SQL)."""
    conn.execute("DELETE FROM revenue_months")
    conn.execute("DELETE FROM revenue_month_lines")
    conn.execute(_ADD_INVOICE.format(**_ALL), {"sign": 1})
    conn.execute(_ADD_LINES.format(**_ALL), {"sign": 1})


def kept(conn: db.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of both tables, in key order."""
    invoices = conn.execute(
        "SELECT month, currency, customer_id, plan_code, months, invoices, subtotal, tax,"
        " total, base_fee, lines FROM revenue_months ORDER BY 1, 2, 3, 4, 5"
    ).fetchall()
    lines = conn.execute(
        "SELECT month, currency, kind, metric, lines, amount, quantity FROM revenue_month_lines"
        " ORDER BY 1, 2, 3, 4"
    ).fetchall()
    return invoices, lines


def recomputed(conn: db.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What both tables hold if computed from the invoices now, in the shape of `kept`."""
    return (
        conn.execute(_INVOICE_ROWS.format(**_ALL), {"sign": 1}).fetchall(),
        conn.execute(_LINE_ROWS.format(**_ALL), {"sign": 1}).fetchall(),
    )


def from_invoices() -> tuple[str, str]:
    """The SELECTs of both tables' rows computed from every invoice and line, as SQL text with
    no parameters (in the tables' column order, without `at`): what the analytics benchmark
    turns into views for its baseline, the reports reading the invoices themselves."""
    return (
        _INVOICE_ROWS.format(**_ALL).replace("%(sign)s", "1"),
        _LINE_ROWS.format(**_ALL).replace("%(sign)s", "1"),
    )
