-- The revenue reports' pre-aggregates (storage/analytics/revenue_months.py), so that revenue,
-- MRR, overage and top customers read one row per customer × month (or one per month ×
-- currency × line kind and metric) instead of every invoice and line:
-- - revenue_months: per month × currency × customer × plan × months (1, or 12 for a yearly
--   invoice, which counts in the local month its period starts): the reported invoices
--   (finalized and paid), their subtotal, tax and total, their base fee lines and all their
--   lines;
-- - revenue_month_lines: per month × currency × line kind × metric ('' for none): how many
--   lines, their amount and quantity.
-- Both are kept by storage/invoices/writes.py in the transaction that finalizes an invoice
-- (added) or voids a finalized one (taken away), and backfilled here from the invoices.
-- depends: 0012_analytics_indexes 0013_invoice_documents

CREATE TABLE revenue_months (
    month       text     NOT NULL,
    currency    char(3)  NOT NULL,
    customer_id text     NOT NULL,
    plan_code   text     NOT NULL,
    months      smallint NOT NULL,
    invoices    integer  NOT NULL,
    subtotal    numeric  NOT NULL,
    tax         numeric  NOT NULL,
    total       numeric  NOT NULL,
    base_fee    numeric  NOT NULL,
    lines       numeric  NOT NULL,
    -- the month as a number (year × 12 + month − 1), for MRR's trailing windows
    at          integer  NOT NULL GENERATED ALWAYS AS
                (split_part(month, '-', 1)::integer * 12 + split_part(month, '-', 2)::integer - 1)
                STORED,
    -- covering: the reports by customer read the index alone, in order, with no sort
    PRIMARY KEY (month, currency, customer_id, plan_code, months)
        INCLUDE (invoices, subtotal, tax, total)
);

-- Without it PostgreSQL guesses a tenth of the rows as customer × month groups and picks a
-- hash aggregate that spills to disk, then a sort, over a streaming read of the primary key.
CREATE STATISTICS revenue_months_groups (ndistinct) ON month, currency, customer_id
    FROM revenue_months;
CREATE STATISTICS revenue_months_customer_months (ndistinct) ON customer_id, currency, at
    FROM revenue_months;

CREATE TABLE revenue_month_lines (
    month    text    NOT NULL,
    currency char(3) NOT NULL,
    kind     text    NOT NULL,
    metric   text    NOT NULL,
    lines    integer NOT NULL,
    amount   numeric NOT NULL,
    quantity numeric NOT NULL,
    PRIMARY KEY (month, currency, kind, metric)
);

INSERT INTO revenue_months (month, currency, customer_id, plan_code, months, invoices, subtotal,
                            tax, total, base_fee, lines)
SELECT CASE WHEN length(i.period_label) = 4
            THEN to_char(i.period_start AT TIME ZONE i.timezone, 'YYYY-MM')
            ELSE i.period_label END,
       i.currency, i.customer_id, i.plan_code,
       CASE WHEN length(i.period_label) = 4 THEN 12 ELSE 1 END,
       count(*), sum(i.subtotal), sum(i.tax), sum(i.total),
       coalesce(sum(l.base_fee), 0), coalesce(sum(l.lines), 0)
FROM invoices i
LEFT JOIN (SELECT invoice_id, sum(amount) FILTER (WHERE kind = 'base_fee') AS base_fee,
                  sum(amount) AS lines
           FROM invoice_lines GROUP BY invoice_id) l ON l.invoice_id = i.id
WHERE i.status IN ('finalized', 'paid')
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO revenue_month_lines
SELECT CASE WHEN length(i.period_label) = 4
            THEN to_char(i.period_start AT TIME ZONE i.timezone, 'YYYY-MM')
            ELSE i.period_label END,
       i.currency, l.kind, coalesce(l.metric, ''),
       count(*), sum(l.amount), sum(coalesce(l.quantity, 0))
FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
WHERE i.status IN ('finalized', 'paid')
GROUP BY 1, 2, 3, 4;

ANALYZE revenue_months;
ANALYZE revenue_month_lines;
