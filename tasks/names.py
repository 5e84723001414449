"""Every Dramatiq queue and actor name, once: producers, workers, the scheduler and
`meter ops stats` must agree on them, and a message already queued names them as strings.

The values are a contract: `ingest` / `ingest_events` is the batch message of CONTRACTS.md
(sent by producers in other languages too), and queued messages outlive a deploy, so a
renamed actor would leave them undeliverable. Add names; never change one.
"""

from __future__ import annotations

# Queues.
INGEST_QUEUE = "ingest"
BILLING_QUEUE = "billing"
NOTIFY_QUEUE = "notifications"
MAINTENANCE_QUEUE = "maintenance"

#: Every queue a worker consumes and `meter ops stats` reports.
QUEUES = (INGEST_QUEUE, BILLING_QUEUE, NOTIFY_QUEUE, MAINTENANCE_QUEUE)

# Actors on INGEST_QUEUE.
INGEST_EVENTS = "ingest_events"
INGEST_FAILED = "ingest_failed"

# Actors on BILLING_QUEUE.
GENERATE_INVOICE = "generate_invoice"
INVOICE_JOB_FAILED = "invoice_job_failed"
CLOSE_PERIOD = "close_period"
CLOSE_DUE_PERIODS = "close_due_periods"
FINALIZE_DUE_INVOICES = "finalize_due_invoices"
REFRESH_INVOICES = "refresh_invoices"

# Actors on NOTIFY_QUEUE.
DELIVER_NOTIFICATIONS = "deliver_notifications"

# Actors on MAINTENANCE_QUEUE.
RECONCILE_COUNTERS = "reconcile_counters"
PRUNE_INGEST_HISTORY = "prune_ingest_history"
