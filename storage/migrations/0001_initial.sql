-- Initial schema: every table the design needs, including those later work fills.
-- Money and quantities are NUMERIC (never float); every timestamp is timestamptz.
-- depends:

-- Plans -----------------------------------------------------------------------------------

-- One row per stored version of a plan file; a changed file becomes version + 1.
CREATE TABLE plans (
    code         text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    content_hash text        NOT NULL,
    definition   jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, version)
);

-- Invoices name the plan version they priced: a stored version must never change under them.
CREATE FUNCTION plans_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'plan % version % is immutable: apply a changed plan as a new version',
        OLD.code, OLD.version
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER plans_immutable
    BEFORE UPDATE OR DELETE ON plans
    FOR EACH ROW EXECUTE FUNCTION plans_are_immutable();

-- Customers and their subscription history --------------------------------------------------

CREATE TABLE customers (
    id         text        PRIMARY KEY,
    name       text,
    plan_code  text        NOT NULL,
    timezone   text        NOT NULL DEFAULT 'UTC',
    anchor_day smallint    CHECK (anchor_day BETWEEN 1 AND 31),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz,
    metadata   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at >= starts_at)
);

CREATE INDEX customers_plan_code_idx ON customers (plan_code);

-- One row per plan period of a customer; the current one has ends_at NULL.
CREATE TABLE subscriptions (
    id          bigserial   PRIMARY KEY,
    customer_id text        NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    plan_code   text        NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at >= starts_at)
);

CREATE UNIQUE INDEX subscriptions_one_current_idx ON subscriptions (customer_id)
    WHERE ends_at IS NULL;
CREATE INDEX subscriptions_customer_starts_idx ON subscriptions (customer_id, starts_at);

-- The ledger ------------------------------------------------------------------------------

-- Raw accepted events, partitioned by the month (UTC) of their timestamp. A unique key on a
-- partitioned table must contain the partition column, hence the timestamp in the key; the
-- dedup of a resend with another timestamp is event_ids' job.
CREATE TABLE usage_events (
    customer_id text          NOT NULL,
    event_id    text          NOT NULL,
    metric      text          NOT NULL,
    quantity    numeric(30,6) NOT NULL,
    "timestamp" timestamptz   NOT NULL,
    properties  jsonb,
    batch_id    text,
    received_at timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- Catches events of months without a partition yet; ensure_usage_events_partitions moves them
-- out when it creates their month.
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

-- Rebuilding a customer × metric × period from the ledger (reconciliation, counter repair).
CREATE INDEX usage_events_customer_metric_ts_idx
    ON usage_events (customer_id, metric, "timestamp");

-- Creates the monthly partitions usage_events_yYYYYmMM for every month (UTC) from p_from's to
-- p_to's; idempotent and safe when several sessions call it at once. Returns the names created.
CREATE FUNCTION ensure_usage_events_partitions(p_from timestamptz, p_to timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    month_utc   timestamp := date_trunc('month', p_from AT TIME ZONE 'UTC');
    last_utc    timestamp := date_trunc('month', p_to AT TIME ZONE 'UTC');
    part        text;
    lower_bound timestamptz;
    upper_bound timestamptz;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to < p_from THEN
        RAISE EXCEPTION 'ensure_usage_events_partitions: invalid range % .. %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WHILE month_utc <= last_utc LOOP
        part := 'usage_events_' || to_char(month_utc, '"y"YYYY"m"MM');
        IF to_regclass(part) IS NULL THEN
            -- Serializes creators without blocking readers or writers of the ledger; taking the
            -- lock also makes the re-check below see a partition another session just created.
            LOCK TABLE usage_events IN SHARE UPDATE EXCLUSIVE MODE;
            IF to_regclass(part) IS NULL THEN
                lower_bound := month_utc AT TIME ZONE 'UTC';
                upper_bound := (month_utc + interval '1 month') AT TIME ZONE 'UTC';
                EXECUTE format(
                    'CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                    part);
                -- Rows that arrived before their month had a partition wait in the default one.
                EXECUTE format(
                    'WITH moved AS (DELETE FROM usage_events_default'
                    ' WHERE "timestamp" >= $1 AND "timestamp" < $2 RETURNING *)'
                    ' INSERT INTO %I SELECT * FROM moved', part)
                    USING lower_bound, upper_bound;
                EXECUTE format(
                    'ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    part, lower_bound, upper_bound);
                RETURN NEXT part;
            END IF;
        END IF;
        month_utc := month_utc + interval '1 month';
    END LOOP;
END;
$$;

-- The current month and two on each side (every process start re-checks this, see storage.db).
DO $$
BEGIN
    PERFORM ensure_usage_events_partitions(now() - interval '2 months',
                                           now() + interval '2 months');
END;
$$;

-- The dedup index over the accepted window: one row per customer × event id, whatever the
-- timestamp of a resend. Pruned by age.
CREATE TABLE event_ids (
    customer_id text        NOT NULL,
    event_id    text        NOT NULL,
    "timestamp" timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id)
);

-- Rows arrive in received_at order: a BRIN index makes pruning by age cheap to maintain.
CREATE INDEX event_ids_received_at_idx ON event_ids USING brin (received_at);

-- Rollups ---------------------------------------------------------------------------------

-- One row per customer × billing period; every ingest transaction that touches the period bumps
-- version, which orders the counter updates derived from it.
CREATE TABLE usage_periods (
    customer_id  text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    version      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, period_start),
    CHECK (period_end > period_start)
);

CREATE TABLE usage_rollups (
    customer_id     text        NOT NULL,
    metric          text        NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    event_count     bigint      NOT NULL DEFAULT 0,
    total           numeric     NOT NULL DEFAULT 0,
    maximum         numeric,
    latest_at       timestamptz,
    latest_event_id text,
    latest_value    numeric,
    weighted_v      numeric     NOT NULL DEFAULT 0,
    weighted_vt     numeric     NOT NULL DEFAULT 0,
    charge_state    jsonb       DEFAULT '{}'::jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, metric, period_start),
    CHECK (period_end > period_start)
);

CREATE INDEX usage_rollups_period_idx ON usage_rollups (period_start);

-- Distinct values of unique_count metrics, per customer × metric × period.
CREATE TABLE usage_rollup_uniques (
    customer_id  text        NOT NULL,
    metric       text        NOT NULL,
    period_start timestamptz NOT NULL,
    value        text        NOT NULL,
    PRIMARY KEY (customer_id, metric, period_start, value)
);

-- Per-day totals for usage trends.
CREATE TABLE usage_daily (
    customer_id text    NOT NULL,
    metric      text    NOT NULL,
    day         date    NOT NULL,
    event_count bigint  NOT NULL DEFAULT 0,
    total       numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, metric, day)
);

CREATE INDEX usage_daily_day_idx ON usage_daily (day);

-- Ingest bookkeeping ----------------------------------------------------------------------

-- One row per ingested batch: its outcome, and the counter deltas it owes Redis until
-- counters_applied_at says they were applied (a redelivered message must not apply them twice).
CREATE TABLE ingest_batches (
    batch_id            text        PRIMARY KEY,
    received_at         timestamptz NOT NULL DEFAULT now(),
    accepted            integer     NOT NULL DEFAULT 0,
    duplicates          integer     NOT NULL DEFAULT 0,
    rejected            integer     NOT NULL DEFAULT 0,
    deltas              jsonb,
    counters_applied_at timestamptz
);

CREATE INDEX ingest_batches_counters_pending_idx ON ingest_batches (received_at)
    WHERE counters_applied_at IS NULL;

-- Every event that was not accepted, with its reason: nothing is dropped silently.
CREATE TABLE rejected_events (
    id          bigserial   PRIMARY KEY,
    batch_id    text,
    event_id    text,
    customer_id text,
    metric      text,
    reason      text        NOT NULL,
    detail      text,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rejected_events_reason_idx ON rejected_events (reason);
CREATE INDEX rejected_events_batch_idx ON rejected_events (batch_id);

-- Invoices --------------------------------------------------------------------------------

CREATE TABLE invoices (
    id           text        PRIMARY KEY,
    customer_id  text        NOT NULL REFERENCES customers (id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    plan_code    text        NOT NULL,
    plan_version integer     NOT NULL,
    currency     char(3)     NOT NULL,
    status       text        NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'finalized', 'paid', 'void')),
    number       bigint      UNIQUE,
    subtotal     numeric     NOT NULL DEFAULT 0,
    tax          numeric     NOT NULL DEFAULT 0,
    total        numeric     NOT NULL DEFAULT 0,
    document     jsonb,
    grace_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz,
    paid_at      timestamptz,
    voided_at    timestamptz,
    replaces     text        REFERENCES invoices (id),
    FOREIGN KEY (plan_code, plan_version) REFERENCES plans (code, version),
    CHECK (period_end > period_start),
    -- Numbers are given at finalization, gaplessly: a draft has none, a final invoice has one.
    CHECK (status <> 'draft' OR number IS NULL),
    CHECK (status NOT IN ('finalized', 'paid') OR number IS NOT NULL)
);

-- One live invoice per customer × period, whatever the retries, schedulers or re-runs.
CREATE UNIQUE INDEX invoices_one_per_period_idx ON invoices (customer_id, period_start)
    WHERE status <> 'void';
CREATE INDEX invoices_period_idx ON invoices (period_start);
CREATE INDEX invoices_drafts_due_idx ON invoices (grace_until) WHERE status = 'draft';

CREATE TABLE invoice_lines (
    invoice_id text    NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    kind       text    NOT NULL,
    metric     text,
    model      text,
    quantity   numeric,
    amount     numeric NOT NULL,
    detail     jsonb,
    PRIMARY KEY (invoice_id, position)
);

-- Gapless invoice numbering: the next number is taken under this row's lock.
CREATE TABLE invoice_numbers (
    name        text   PRIMARY KEY,
    last_number bigint NOT NULL DEFAULT 0
);

-- One invoice-generation job per customer × period (the close fans them out).
CREATE TABLE invoice_jobs (
    id           bigserial   PRIMARY KEY,
    customer_id  text        NOT NULL REFERENCES customers (id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    message_id   text,
    invoice_id   text        REFERENCES invoices (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, period_start)
);

CREATE INDEX invoice_jobs_unfinished_idx ON invoice_jobs (status) WHERE status <> 'succeeded';

-- Alerts and notifications ----------------------------------------------------------------

-- A threshold crossing is recorded once per customer × metric × kind × threshold × period
-- (metric is NULL for spend alerts, hence NULLS NOT DISTINCT, PostgreSQL 15+).
CREATE TABLE alerts (
    id           bigserial   PRIMARY KEY,
    customer_id  text        NOT NULL REFERENCES customers (id),
    metric       text,
    kind         text        NOT NULL,
    threshold    numeric     NOT NULL,
    period_start timestamptz NOT NULL,
    value        numeric     NOT NULL,
    triggered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (customer_id, metric, kind, threshold, period_start)
);

-- Transactional outbox: written in the transaction that decides to notify, delivered after.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    topic           text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);

CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
