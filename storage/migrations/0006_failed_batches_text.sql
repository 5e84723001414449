-- A failed batch is kept whole, whatever it holds: jsonb refuses NUL (\u0000) and lone
-- surrogates, which producers can send, so the payload becomes text holding ASCII JSON (every
-- such character as its \uXXXX escape; see storage/payloads.py). Existing rows keep their JSON.
-- depends: 0005_plan_order

ALTER TABLE failed_batches ALTER COLUMN payload TYPE text USING payload::text;
