"""The rules: what ingest, billing, usage reports, limits and reconciliation decide, built on
`pricing` (pure) and `storage` (data access). Never imports Dramatiq; importing starts nothing."""
