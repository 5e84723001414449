-- Batches whose ingest retries ran out, kept whole so they can be replayed: nothing is lost.
-- depends: 0001_initial

CREATE TABLE failed_batches (
    id         bigserial   PRIMARY KEY,
    batch_id   text        NULL,
    payload    jsonb       NOT NULL,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz NULL
);
CREATE INDEX failed_batches_pending_idx ON failed_batches (failed_at) WHERE replayed_at IS NULL;
