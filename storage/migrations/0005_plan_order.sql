-- Keep a plan's definition as written (json keeps key order; jsonb sorts keys), so metrics and
-- charges are listed in the order of the plan file. Versions stay immutable: no row changes.
-- depends: 0004_lean_ingest

ALTER TABLE plans ALTER COLUMN definition TYPE json USING definition::json;
