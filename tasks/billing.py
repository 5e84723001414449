"""Billing actors: close a period (one invoice job per customer), generate an invoice, finalize
the drafts whose grace period is over, recompute a draft when late usage arrives.

Thin on purpose: `services.periods` decides what is due, `services.invoice_jobs` what a job's
attempt does and which errors are worth a retry, `services.invoicing` what an invoice says;
these actors decode their message, call the service and let Dramatiq retry. The functions
below that send (`fan_out_*`, `retry_jobs`) are the services' with this module's `enqueue_jobs`.
The scheduler enqueues `close_due_periods` and `finalize_due_invoices` by name, hourly; the
ingest actor calls `request_invoice_refresh` for usage whose segment has already ended
(coalesced: one refresh waits per customer × segment, see `storage.invoices.refresh_markers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dramatiq

from services import invoice_jobs as jobs_service
from services import invoice_lifecycle, invoicing
from services.invoice_jobs import GENERATE_MAX_RETRIES, should_retry
from services.periods import PeriodNotEnded
from storage.invoices import jobs as invoice_jobs
from storage.invoices import refresh_markers
from storage.invoices.jobs import Job, JobKey
from tasks import metrics, names
from tasks.broker import broker_of

log = logging.getLogger(f"meterline.{__name__}")

_LONG_RUN_MS = 30 * 60 * 1000


def fan_out_period(period_label: str | None = None, now: datetime | None = None) -> list[int]:
    """`services.invoice_jobs.fan_out_period`, its messages sent to the workers."""
    return jobs_service.fan_out_period(period_label, enqueue_jobs, now)


def fan_out_keys(keys: Sequence[JobKey], now: datetime | None = None) -> list[int]:
    """`services.invoice_jobs.fan_out_keys`, its messages sent to the workers."""
    return jobs_service.fan_out_keys(keys, enqueue_jobs, now)


def fan_out_due_periods(now: datetime | None = None) -> int:
    """`services.invoice_jobs.fan_out_due_periods`, its messages sent to the workers."""
    return jobs_service.fan_out_due_periods(enqueue_jobs, now)


def retry_jobs(
    job_ids: Sequence[int] | None, *, inline: bool = False, now: datetime | None = None
) -> list[Job]:
    """Run jobs again (None: every failed one): sent to the workers, or run here (`inline`)."""
    return jobs_service.retry_jobs(job_ids, None if inline else enqueue_jobs, now=now)


def run_jobs_inline(
    jobs: Iterable[Job],
    on_done: Callable[[Job], None] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """`services.invoice_jobs.run_jobs_inline`: no broker involved."""
    jobs_service.run_jobs_inline(jobs, on_done, now=now)


# Actors return None: Dramatiq logs a warning for every value returned without a result backend.


@dramatiq.actor(
    actor_name=names.GENERATE_INVOICE,
    queue_name=names.BILLING_QUEUE,
    max_retries=GENERATE_MAX_RETRIES,  # documents the limit; retry_when enforces it
    retry_when=should_retry,
    min_backoff=1000,
    max_backoff=60_000,
    time_limit=120_000,
    on_retry_exhausted=names.INVOICE_JOB_FAILED,
)
def generate_invoice(customer_id: str, period_start: str) -> None:
    """Generate (or recompute the draft of) one customer × period's invoice."""
    started = time.perf_counter()
    invoice_id = jobs_service.run_invoice_job(customer_id, datetime.fromisoformat(period_start))
    metrics.invoice_generated()
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("invoice_generated customer=%s period_start=%s invoice=%s duration_ms=%.1f",
             customer_id, period_start, invoice_id, elapsed_ms)  # fmt: skip


@dramatiq.actor(actor_name=names.INVOICE_JOB_FAILED, queue_name=names.BILLING_QUEUE, max_retries=20)
def invoice_job_failed(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """`generate_invoice` gave up: its job is failed, with the error of its last attempt."""
    args = message_data.get("args") or []
    if len(args) < 2:
        log.error("invoice job failed without its arguments: %r", message_data)
        return
    traceback = (message_data.get("options") or {}).get("traceback") or ""
    last_line = traceback.strip().splitlines()[-1] if traceback.strip() else None
    invoice_jobs.fail(args[0], datetime.fromisoformat(args[1]), last_line)
    log.warning("invoice job %s %s failed after %s retries", args[0], args[1], retry_info)


@dramatiq.actor(
    actor_name=names.CLOSE_PERIOD,
    queue_name=names.BILLING_QUEUE,
    max_retries=5,
    time_limit=_LONG_RUN_MS,
)
def close_period(period_label: str | None = None) -> None:
    """Fan out one `generate_invoice` per customer whose period with this label has ended."""
    try:
        job_ids = fan_out_period(period_label)
    except PeriodNotEnded as exc:  # retrying cannot help; the scheduler will
        log.warning("close %s refused: %s", period_label, exc)
        return
    log.info("close %s: %d invoice jobs", period_label, len(job_ids))


@dramatiq.actor(
    actor_name=names.CLOSE_DUE_PERIODS,
    queue_name=names.BILLING_QUEUE,
    max_retries=5,
    time_limit=_LONG_RUN_MS,
)
def close_due_periods() -> None:
    """Hourly: every ended period without a job gets one (a scheduler that was down at month
    end catches up), and lost messages are sent again."""
    log.info("due periods: %d invoice jobs sent", fan_out_due_periods())


@dramatiq.actor(
    actor_name=names.FINALIZE_DUE_INVOICES,
    queue_name=names.BILLING_QUEUE,
    max_retries=5,
    time_limit=_LONG_RUN_MS,
)
def finalize_due_invoices() -> None:
    """Finalize (number) every draft whose grace period is over."""
    log.info("finalized %d invoices", len(invoice_lifecycle.finalize_due()))


@dramatiq.actor(actor_name=names.REFRESH_INVOICES, queue_name=names.BILLING_QUEUE, max_retries=10)
def refresh_invoices(customer_id: str, segment_start: str) -> None:
    """Recompute the draft that late usage in this segment affects, if there is one."""
    start = datetime.fromisoformat(segment_start)
    # Before reading: usage committed from here on asks for (and gets) a refresh of its own.
    refresh_markers.release(customer_id, start)
    invoicing.refresh_after_late_usage(customer_id, start)


def request_invoice_refresh(customer_id: str, segment_start: datetime) -> bool:
    """For the ingest actor, after its commit: usage was added to a segment that has ended.
    One refresh waits per customer × segment; True when this call queued it."""
    if not refresh_markers.claim(customer_id, segment_start):
        return False  # the refresh that is waiting has not read the rollups yet
    try:
        refresh_invoices.send(customer_id, segment_start.isoformat())
    except BaseException:
        refresh_markers.release(customer_id, segment_start)
        raise
    return True


def enqueue_jobs(jobs: Sequence[Job], now: datetime | None = None) -> None:
    """Send one `generate_invoice` per job, its message id recorded on the row first (a
    message lost before it is sent is found as an orphan and sent again)."""
    messages = [
        (job, generate_invoice.message(job.customer_id, job.period_start.isoformat()))
        for job in jobs
    ]
    invoice_jobs.attach_messages(
        ((job.id, message.message_id) for job, message in messages), now or datetime.now(UTC)
    )
    broker = broker_of(generate_invoice)
    for _, message in messages:
        broker.enqueue(message)
