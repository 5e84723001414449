"""The engine's own Prometheus metrics, recorded by the actors: one call per batch, per alert
check, per invoice, per delivery run — never per event.

Off until `enable()` (what `workers.app` calls in each worker process when metrics are on):
until then every function returns at once and `prometheus_client` is not even imported, so
tests, the CLI and web apps pay nothing. Dramatiq runs several worker processes: the metrics
use prometheus_client's multiprocess mode, one directory per `meter worker` run
(`PROMETHEUS_MULTIPROC_DIR`, set before any worker process starts), summed at each scrape by
the exposition server (see `workers.metrics`).

Labels hold only bounded names (a rejection reason, a queue): never a customer id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Seconds: batch processing time and queue lag (a batch waits behind others under load).
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class _Metrics:
    accepted: Any
    duplicates: Any
    rejected: Any
    batch_seconds: Any
    batch_events: Any
    queue_lag: Any
    alerts_fired: Any
    invoices: Any
    webhook_deliveries: Any
    webhook_failures: Any


_metrics: _Metrics | None = None


def enable() -> None:
    """Create the metrics (once per process). Call it after PROMETHEUS_MULTIPROC_DIR is set:
    prometheus_client picks its value store when it is first imported."""
    global _metrics
    if _metrics is not None:
        return
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()  # values live in the multiprocess files, not in a registry
    _metrics = _Metrics(
        accepted=Counter("meterline_events_accepted", "Usage events accepted into the ledger.",
                         registry=registry),
        duplicates=Counter("meterline_events_duplicate", "Events skipped: their id was known.",
                           registry=registry),
        rejected=Counter("meterline_events_rejected", "Events rejected, by reason.",
                         ["reason"], registry=registry),
        batch_seconds=Histogram("meterline_ingest_batch_seconds", "Time to ingest one batch.",
                                buckets=_BUCKETS, registry=registry),
        batch_events=Counter("meterline_ingest_batches", "Ingest batches processed.",
                             registry=registry),
        queue_lag=Histogram("meterline_queue_lag_seconds",
                            "From enqueue (or a retry's due time) to the start of processing.",
                            ["queue"], buckets=_BUCKETS, registry=registry),
        alerts_fired=Counter("meterline_alerts_fired", "Alerts fired (written once each).",
                             registry=registry),
        invoices=Counter("meterline_invoices_generated",
                         "Invoice jobs done (an invoice generated or its draft recomputed).",
                         registry=registry),
        webhook_deliveries=Counter("meterline_webhook_deliveries",
                                   "Notifications delivered to a webhook.", registry=registry),
        webhook_failures=Counter("meterline_webhook_failures",
                                 "Failed webhook delivery attempts.", registry=registry),
    )  # fmt: skip


def batch_ingested(
    accepted: int, duplicates: int, rejected: Mapping[str, int], seconds: float
) -> None:
    """One ingest batch done: its counts and how long it took."""
    metrics = _metrics
    if metrics is None:
        return
    metrics.accepted.inc(accepted)
    metrics.duplicates.inc(duplicates)
    for reason, count in rejected.items():
        metrics.rejected.labels(reason).inc(count)
    metrics.batch_seconds.observe(seconds)
    metrics.batch_events.inc()


def queue_lag(queue: str, seconds: float) -> None:
    if _metrics is not None:
        _metrics.queue_lag.labels(queue).observe(max(seconds, 0.0))


def alerts_fired(count: int) -> None:
    if _metrics is not None and count:
        _metrics.alerts_fired.inc(count)


def invoice_generated() -> None:
    if _metrics is not None:
        _metrics.invoices.inc()


def webhooks_delivered(delivered: int, failed: int) -> None:
    if _metrics is not None:
        _metrics.webhook_deliveries.inc(delivered)
        _metrics.webhook_failures.inc(failed)
