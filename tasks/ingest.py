"""The ingest actor: one batch of usage events into the ledger, the rollups and the counters.

Thin on purpose: decode the batch, let `services.ingest` write it exactly once, apply the
counter deltas (idempotent), then let the alert check look at the customers that changed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq

from pricing.decoding import EventsJSON
from pricing.events import MAX_ID_LENGTH, text_problem
from services.alerts import check_segments
from services.classify import valid_customer_ids
from services.ingest import ingest_batch
from storage.ledger.batches import mark_counters_applied, record_failed_batch
from storage.payloads import exact_json
from storage.usage.counters import apply_deltas, mark_counted, reload_segments
from tasks import metrics, names
from tasks.billing import request_invoice_refresh
from tasks.retry_log import last_error, summarised_failures

log = logging.getLogger(f"meterline.{__name__}")


def batch_identity(batch: dict[str, Any]) -> str:
    """The batch's id; a producer that sent none (or one that cannot be a key: not a string,
    longer than an event id, holding NUL or a lone surrogate) gets one derived from the
    content, so a redelivery of the same message still has the same id."""
    batch_id = batch.get("batch_id")
    if (
        isinstance(batch_id, str)
        and 0 < len(batch_id) <= MAX_ID_LENGTH
        and text_problem(batch_id) is None
    ):
        return batch_id
    digest = hashlib.sha256(exact_json(_values(batch), sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest}"


def _values(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its events as values, however the message decoder left them."""
    events = batch.get("events")
    return {**batch, "events": events.items()} if isinstance(events, EventsJSON) else batch


@dramatiq.actor(
    actor_name=names.INGEST_EVENTS,
    queue_name=names.INGEST_QUEUE,
    max_retries=20,
    min_backoff=500,
    max_backoff=300_000,
    time_limit=120_000,
    on_retry_exhausted=names.INGEST_FAILED,
)
@summarised_failures
def ingest_events(batch: Any) -> None:
    if not isinstance(batch, dict) or not isinstance(batch.get("events"), list | EventsJSON):
        record_failed_batch(batch, "malformed batch: expected {batch_id, events: [...]}")
        return
    # One instant for the whole message: the accepted window and "has this segment ended"
    # are judged against the same now.
    now = datetime.now(UTC)
    started = time.perf_counter()
    outcome = ingest_batch(batch_identity(batch), batch["events"], now=now)
    if outcome.redelivered:
        touched = outcome.segments
        reload_segments(touched)
    else:
        touched = [(d.customer_id, d.start, d.end) for d in outcome.deltas]
        apply_deltas(outcome.deltas)
    # Producers' check_limit stops counting this batch as pending: every customer it names
    # (accepted events are in the counters now; rejected ones never will be). At once: until
    # the marker is there, a producer counts the batch twice (its own and the counters').
    named = (
        outcome.named if outcome.named is not None else valid_customer_ids(_values(batch)["events"])
    )
    mark_counted(outcome.batch_id, named)
    mark_counters_applied(outcome.batch_id)
    # Alerts, from the rollups the batch committed: a redelivery evaluates the same segments
    # again (an alert is written once whoever gets there first): a kill before this loses none.
    # (The worker's PromptDelivery middleware sends a delivery run for the rows written.)
    metrics.alerts_fired(len(check_segments(touched, now=now)))
    # Late usage for a segment that has ended: its draft invoice is recomputed (a finalized
    # one is left alone; the next invoice carries an adjustment). One refresh waits per
    # customer × segment, however many batches ask for it.
    for customer_id, start, end in touched:
        if end <= now:
            request_invoice_refresh(customer_id, start)
    seconds = time.perf_counter() - started
    metrics.batch_ingested(outcome.accepted, outcome.duplicates, outcome.rejected, seconds)
    log.info("batch_ingested batch=%s events=%d accepted=%d duplicates=%d rejected=%d "
             "redelivered=%s duration_ms=%.1f", outcome.batch_id, outcome.events,
             outcome.accepted, outcome.duplicates, outcome.rejected_total, outcome.redelivered,
             seconds * 1000)  # fmt: skip
    if outcome.rejected:
        log.info("batch %s: rejected %s", outcome.batch_id, outcome.rejected)


@dramatiq.actor(actor_name=names.INGEST_FAILED, queue_name=names.INGEST_QUEUE, max_retries=100)
def ingest_failed(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Called when a batch ran out of retries: keep it whole, with its last error."""
    args = message_data.get("args") or [None]
    error = retry_info.get("last_error") or last_error(message_data) or "retries exhausted"
    record_failed_batch(args[0], str(error))
