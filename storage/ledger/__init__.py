"""The ledger: the append-only events (partitioned by month), the dedup index and batch
claims kept for the accepted window, the rejected events, and the advisory locks ingest takes
against subscription-history changes. Importing this package starts nothing."""
