-- Webhook delivery: one outbox row per endpoint, dead letters, an idempotency key.
--
-- A notification about a customer that has its own endpoint (`meter customers set-webhook`) is
-- written twice, once per endpoint ('global': METER_WEBHOOK_URL, 'customer': the customer's
-- URL), so each delivery keeps its own attempts, error and backoff. A row that failed
-- METER_WEBHOOK_MAX_ATTEMPTS times is dead (`dead_at`): never claimed again until
-- `meter ops redeliver` makes it due. `idempotency_key` is the notification's stable key
-- (also in its payload): a writer that runs twice (a retried finalization) queues it once.
-- depends: 0007_ingest_totals

ALTER TABLE outbox
    ADD COLUMN customer_id     text,
    ADD COLUMN endpoint        text NOT NULL DEFAULT 'global'
        CHECK (endpoint IN ('global', 'customer')),
    ADD COLUMN idempotency_key text,
    ADD COLUMN dead_at         timestamptz;

CREATE UNIQUE INDEX outbox_idempotency_idx ON outbox (idempotency_key, endpoint)
    WHERE idempotency_key IS NOT NULL;

DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead_idx ON outbox (dead_at) WHERE dead_at IS NOT NULL;

-- A customer's own webhook endpoint; `secret` NULL: signed with METER_WEBHOOK_SECRET.
CREATE TABLE customer_webhooks (
    customer_id text        PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    url         text        NOT NULL,
    secret      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
