-- Ingest hot path: one index fewer per ledger row, and a batch remembers only which segments it
-- touched (its counters are reloaded from the rollups if it is ever redelivered), not its deltas.
-- depends: 0002_failed_batches

DROP INDEX IF EXISTS usage_events_customer_metric_ts_idx;
ALTER TABLE ingest_batches RENAME COLUMN deltas TO segments;
