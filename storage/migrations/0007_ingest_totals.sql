-- Running ingest totals for `meter ops stats`, so that a stats call never sums ingest_batches
-- (which is now pruned nightly with event_ids: storage/retention.py).
--
-- One row per UTC day × slot. The slot is the PostgreSQL backend that ran the ingest
-- transaction (pg_backend_pid()): a backend runs one transaction at a time, so concurrent
-- workers never wait on each other's totals row. The nightly pruning folds the slots of a past
-- day into slot 0 (no backend has pid 0), leaving one row per day.
-- depends: 0006_failed_batches_text

CREATE TABLE ingest_totals (
    day        date    NOT NULL,
    slot       integer NOT NULL,
    accepted   bigint  NOT NULL DEFAULT 0,
    duplicates bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, slot)
);

-- Everything ingested so far (workers of this release write their rows after this commits).
INSERT INTO ingest_totals (day, slot, accepted, duplicates)
SELECT (received_at AT TIME ZONE 'UTC')::date, 0, sum(accepted), sum(duplicates)
FROM ingest_batches
GROUP BY 1;

-- Pruning claims by age, in chunks, oldest first (and finding whether pruning is overdue).
CREATE INDEX ingest_batches_received_at_idx ON ingest_batches (received_at);
