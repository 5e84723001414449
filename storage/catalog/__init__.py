"""The catalog: plans, customers and their subscription history, and the in-process cache of
customer contexts that ingest and billing read. Importing this package starts nothing."""
