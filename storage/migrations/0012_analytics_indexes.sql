-- Indexes that fit the analytics reports (storage/analytics/), so that a report over 12 months
-- of 10,000 customers reads index entries only (bench/bench_analytics.py): the finalized and
-- paid invoices by period label with the columns the reports sum; the lines of an invoice with
-- what the reports sum of them; the daily usage rollups by metric and day, for the usage trend
-- over every customer.
-- depends: 0007_ingest_totals

CREATE INDEX invoices_reported_idx ON invoices (period_label)
    INCLUDE (id, customer_id, currency, subtotal, tax, total, plan_code, period_start, timezone)
    WHERE status IN ('finalized', 'paid');

CREATE INDEX invoice_lines_reported_idx ON invoice_lines (invoice_id)
    INCLUDE (kind, metric, amount, quantity);

CREATE INDEX usage_daily_metric_day_idx ON usage_daily (metric, day)
    INCLUDE (event_count, total);
