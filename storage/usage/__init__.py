"""Usage state derived from the ledger: the durable rollups in PostgreSQL and the live
counters in Redis (hash layout and Lua scripts). Importing this package starts nothing."""
