-- Indexes that fit the analytics reports (services/analytics.py), so that a report over 12
-- months of 10,000 customers reads only these index entries (bench/bench_analytics.py):
-- the finalized and paid invoices by period label, with the columns the reports sum; and the
-- daily usage rollups by metric and day, for the usage trend over every customer.
-- depends: 0007_ingest_totals

CREATE INDEX invoices_reported_idx ON invoices (period_label)
    INCLUDE (customer_id, currency, subtotal, tax, total, plan_code, period_start, timezone)
    WHERE status IN ('finalized', 'paid');

CREATE INDEX usage_daily_metric_day_idx ON usage_daily (metric, day)
    INCLUDE (event_count, total);
