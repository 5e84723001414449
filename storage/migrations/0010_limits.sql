-- Per-customer limits that beat the plan's (`meter limits set`): one row per customer × metric
-- for hard limits and throttling shares (NULL = the plan's), one row per customer for the cap
-- on the estimated bill. Readers cache them; `storage.catalog.limits` bumps a Redis revision
-- key per customer on every change, read in the same round trip as the counters.
-- depends: 0007_ingest_totals

CREATE TABLE customer_metric_limits (
    customer_id text        NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    metric      text        NOT NULL,
    hard_limit  numeric     CHECK (hard_limit >= 0),
    throttle_at numeric     CHECK (throttle_at > 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, metric)
);

CREATE TABLE customer_spend_caps (
    customer_id text        PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    spend_cap   numeric     NOT NULL CHECK (spend_cap >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
