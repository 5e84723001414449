"""The `deliver_notifications` actor: delivers the outbox's due notifications to the webhook.

Thin on purpose: `services.notifications` holds the rules (signing, backoff, the delivery
loop) and `verify_signature`, which a receiver uses.
"""

from __future__ import annotations

import logging
import time

import dramatiq

from services.notifications import deliver_configured
from storage.settings import get_settings
from tasks import metrics, names

log = logging.getLogger(f"meterline.{__name__}")


@dramatiq.actor(
    actor_name=names.DELIVER_NOTIFICATIONS,
    queue_name=names.NOTIFY_QUEUE,
    max_retries=0,
    time_limit=10 * 60_000,
)
def deliver_notifications() -> None:
    """Deliver pending outbox rows; retries are the outbox's own (per row, with backoff), so
    the message itself is not retried: the scheduler sends the next one in seconds."""
    started = time.perf_counter()
    report = deliver_configured(get_settings())
    metrics.webhooks_delivered(report.delivered, report.failed)
    if report.delivered or report.failed:
        log.info("webhook_run delivered=%d failed=%d dead=%d duration_ms=%.1f", report.delivered,
                 report.failed, report.dead, (time.perf_counter() - started) * 1000)  # fmt: skip


def request_delivery() -> None:
    """Ask a worker for a delivery run now (after rows were made due outside a worker, e.g.
    `meter ops redeliver`); the scheduler's sweep would otherwise pick them up within 10 s."""
    from tasks.broker import get_broker
    from tasks.prompt_delivery import request_delivery as send

    send(get_broker())
