-- Alert rules evaluated at ingest (issue 10): what an alert row records, the key that makes it
-- fire once, and per-customer threshold overrides.
--
-- An alert fires once per customer × metric × kind × threshold × basis × billing period.
-- `basis` is the allowance a usage share was computed against (NULL for spend and limit
-- alerts): after a mid-period plan change the same share of the same allowance is the same
-- alert, while a plan with a larger allowance fires its own thresholds.
-- depends: 0007_ingest_totals

ALTER TABLE alerts
    ADD COLUMN basis        numeric,
    ADD COLUMN period_end   timestamptz,
    ADD COLUMN period_label text,
    ADD COLUMN plan_code    text,
    ADD COLUMN estimated_total numeric,
    ADD COLUMN currency     text,
    ADD COLUMN outbox_id    bigint;

ALTER TABLE alerts DROP CONSTRAINT alerts_customer_id_metric_kind_threshold_period_start_key;
ALTER TABLE alerts ADD CONSTRAINT alerts_once
    UNIQUE NULLS NOT DISTINCT (customer_id, period_start, metric, kind, threshold, basis);

CREATE INDEX alerts_label_idx ON alerts (period_label, customer_id);

-- A customer's own thresholds. kind 'usage': shares of included usage for one metric, or for
-- every metric when metric = ''; kind 'spend': amounts of the estimated bill (metric = '').
-- An empty array turns that kind (or metric) off.
CREATE TABLE alert_overrides (
    customer_id text        NOT NULL REFERENCES customers (id),
    kind        text        NOT NULL CHECK (kind IN ('usage', 'spend')),
    metric      text        NOT NULL DEFAULT '',
    thresholds  numeric[]   NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, kind, metric)
);
