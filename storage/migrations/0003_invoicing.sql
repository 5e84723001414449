-- Invoicing: what an invoice priced (segments, rollup versions), adjustment lines for late
-- usage, and the bookkeeping of the invoice jobs that a period close fans out.
-- depends: 0002_failed_batches

-- An invoice records the plan version of each segment it priced and the rollup version of every
-- segment it read (its own and those of earlier periods it re-rated for adjustments): late usage
-- shows up as a rollup version above the highest one billed.
ALTER TABLE invoices
    ADD COLUMN period_label    text,
    ADD COLUMN timezone        text        NOT NULL DEFAULT 'UTC',
    ADD COLUMN segments        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN rollup_versions jsonb       NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();

CREATE INDEX invoices_customer_period_idx ON invoices (customer_id, period_start);
CREATE INDEX invoices_label_idx ON invoices (period_label);

-- segment_start: the segment a line prices (for an adjustment: the earlier period's segment);
-- for_period_start: set on adjustment lines, the start of the period they correct.
ALTER TABLE invoice_lines
    ADD COLUMN segment_start    timestamptz,
    ADD COLUMN for_period_start timestamptz;

CREATE INDEX invoice_lines_adjustments_idx ON invoice_lines (for_period_start)
    WHERE kind = 'adjustment';

ALTER TABLE invoice_jobs
    ADD COLUMN period_label text,
    ADD COLUMN started_at   timestamptz,
    ADD COLUMN finished_at  timestamptz;

CREATE INDEX invoice_jobs_label_idx ON invoice_jobs (period_label);

-- The one gapless sequence of invoice numbers (the code also creates the row when missing).
INSERT INTO invoice_numbers (name, last_number) VALUES ('invoices', 0) ON CONFLICT DO NOTHING;
