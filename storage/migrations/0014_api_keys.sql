-- HTTP API keys (`meter api-keys create|list|revoke`). Only the SHA-256 of a key's secret is
-- kept: the key itself is shown once, when it is created. `scope` is ops, ingest or customer;
-- a customer key reads only `customer_id`.
-- depends: 0007_ingest_totals

CREATE TABLE api_keys (
    id          text        PRIMARY KEY,
    secret_hash bytea       NOT NULL,
    scope       text        NOT NULL CHECK (scope IN ('ops', 'ingest', 'customer')),
    customer_id text        NULL REFERENCES customers (id) ON DELETE CASCADE,
    name        text        NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz NULL,
    CHECK ((scope = 'customer') = (customer_id IS NOT NULL))
);
