"""Invoices as data: the invoice rows and their readers, the invoice jobs (one per customer ×
period) and the Redis markers that coalesce late-usage refreshes. Generation and the lifecycle
rules live in `services`. Importing this package starts nothing."""
