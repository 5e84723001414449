-- A revision number for the customers' subscription histories: every plan change or
-- cancellation bumps it in its transaction, and ingest checks, under its customer locks, that
-- the catalog it classified a batch with is not older (see storage.ingest_locks).
-- depends: 0005_plan_order

CREATE TABLE history_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint  NOT NULL DEFAULT 0
);

INSERT INTO history_revision DEFAULT VALUES;
