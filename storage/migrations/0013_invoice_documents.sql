-- Invoices a customer can be sent: billing details of customers, the parties and due date
-- fixed on an invoice when it is finalized, and credit notes (their own gapless numbers).
-- depends: 0007_ingest_totals

-- A customer's billing details (its name is customers.name) and its own payment terms, which
-- override the plan's and the seller's default (METER_PAYMENT_TERMS_DAYS).
ALTER TABLE customers
    ADD COLUMN billing_address    text,
    ADD COLUMN email              text,
    ADD COLUMN payment_terms_days integer CHECK (payment_terms_days BETWEEN 0 AND 3650);

-- What a finalized invoice says about who bills whom and when it is due, as it was when the
-- invoice was issued (later changes to the seller settings or the customer do not rewrite a
-- document that was sent): {"seller": {...}, "bill_to": {...}, "payment_terms_days": N}.
ALTER TABLE invoices
    ADD COLUMN issued_details jsonb,
    ADD COLUMN due_date       date;

-- A credit note cancels a finalized invoice that was voided: one per invoice, its lines and
-- totals the invoice's negated, numbered in its own gapless sequence (invoice_numbers row
-- 'credit_notes', taken in the transaction that voids the invoice).
CREATE TABLE credit_notes (
    id             text        PRIMARY KEY,
    number         bigint      NOT NULL UNIQUE,
    invoice_id     text        NOT NULL UNIQUE REFERENCES invoices (id),
    customer_id    text        NOT NULL REFERENCES customers (id),
    currency       char(3)     NOT NULL,
    subtotal       numeric     NOT NULL,
    tax            numeric     NOT NULL,
    total          numeric     NOT NULL,
    reason         text        NOT NULL,
    document       jsonb       NOT NULL,
    issued_at      timestamptz NOT NULL,
    issued_details jsonb       NOT NULL
);

CREATE INDEX credit_notes_customer_idx ON credit_notes (customer_id, issued_at);

INSERT INTO invoice_numbers (name, last_number) VALUES ('credit_notes', 0) ON CONFLICT DO NOTHING;
