-- Rows that every ingest batch updates in place: the rollups, the daily totals, the segments'
-- versions and the running totals. Free room is left on each page so that an update finds space
-- beside the row it replaces and is HOT (no new entry in each index; the old version is pruned
-- in place): measured here, an upsert of 2,700 rollup rows cost PostgreSQL about 35 % less CPU
-- per row at fillfactor 50 than with full pages (bench/README.md, issue 11). The daily totals
-- keep more of each page (70): only the current day's rows are updated, and the table grows by
-- a day of rows every day. Pages written before this keep their fill until the table is
-- rewritten (VACUUM FULL), which is optional.
-- depends: 0007_ingest_totals

ALTER TABLE usage_rollups SET (fillfactor = 50);
ALTER TABLE usage_periods SET (fillfactor = 50);
ALTER TABLE ingest_totals SET (fillfactor = 50);
ALTER TABLE usage_daily SET (fillfactor = 70);
