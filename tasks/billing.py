"""Billing actors: close a period (one invoice job per customer), generate an invoice, finalize
the drafts whose grace period is over, recompute a draft when late usage arrives.

Thin on purpose: storage decides what is due and what an invoice says; these actors move the
work through the queue and keep each job row's status, attempts and last error current. The
scheduler enqueues `close_due_periods` and `finalize_due_invoices` by name, hourly; the ingest
actor calls `request_invoice_refresh` for usage whose segment has already ended (coalesced: one
refresh waits per customer × segment, see `storage.invoices.refresh_markers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dramatiq

from services import invoice_lifecycle as invoices
from storage.db import Connection
from storage.errors import InvalidInput, NotFound
from storage.invoices import jobs as invoice_jobs
from storage.invoices import refresh_markers
from storage.invoices.jobs import Job
from tasks import names

log = logging.getLogger("meterline.billing")

GENERATE_MAX_RETRIES = 5
#: Errors that another attempt cannot fix (no such customer, a period that has not ended).
PERMANENT_ERRORS = (InvalidInput, NotFound)
_LONG_RUN_MS = 30 * 60 * 1000


def should_retry(retries: int, exception: BaseException) -> bool:
    """Retry up to GENERATE_MAX_RETRIES times, never a permanent error."""
    return retries < GENERATE_MAX_RETRIES and not isinstance(exception, PERMANENT_ERRORS)


def describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"


def run_invoice_job(
    customer_id: str, period_start: datetime, *, now: datetime | None = None
) -> str:
    """Generate one customer × period's invoice (or recompute its draft) and keep its job row
    current: an attempt counted first, the error of a failed attempt, and `succeeded` written
    in the same transaction that stores the invoice. Returns the invoice id. `now` (default:
    the clock) decides whether the period has ended."""
    recorded: list[str] = []

    def succeed_with_invoice(conn: Connection, invoice_id: str) -> None:
        invoice_jobs.succeed(customer_id, period_start, invoice_id, conn=conn)
        recorded.append(invoice_id)

    try:
        if invoice_jobs.start_attempt(customer_id, period_start) is None:
            period = invoices.period_of(invoices.customer_context(customer_id), period_start)
            invoice_jobs.start_attempt(customer_id, period_start, period)
        invoice = invoices.generate(
            customer_id, period_start, now=now, on_written=succeed_with_invoice
        )
    except Exception as exc:
        invoice_jobs.record_error(customer_id, period_start, describe(exc))
        raise
    if not recorded:  # nothing was written: the invoice already existed as it is
        invoice_jobs.succeed(customer_id, period_start, invoice.id)
    return invoice.id


def fan_out_period(period_label: str | None = None, now: datetime | None = None) -> list[int]:
    """One job (and message) per customer whose period with this label has ended at `now`
    (default: the clock; label None: each customer's last ended period); jobs that exist are
    not sent again unless orphaned. A label that has ended for no customer yet raises
    `PeriodNotEnded`. Returns the ids of every job of the close."""
    now = now or datetime.now(UTC)
    return fan_out_keys(invoice_jobs.keys_for_label(period_label, now), now)


def fan_out_keys(keys: Sequence[invoice_jobs.JobKey], now: datetime | None = None) -> list[int]:
    """One job (and message) per customer × period; jobs that exist are not sent again
    unless orphaned. Returns the ids of every job."""
    now = now or datetime.now(UTC)
    jobs, created = invoice_jobs.open_jobs(keys, now)
    enqueue_jobs([job for job in jobs if job.id in created or job.is_orphan(now)], now=now)
    return [job.id for job in jobs]


def fan_out_due_periods(now: datetime | None = None) -> int:
    """A job (and message) for every period that has ended by `now` (default: the clock) since
    its customer started and has none yet; orphaned jobs are sent again. Returns how many
    messages went out."""
    now = now or datetime.now(UTC)
    jobs, created = invoice_jobs.open_jobs(invoice_jobs.due_keys(now), now)
    to_send = {job.id: job for job in jobs if job.id in created}
    to_send.update({job.id: job for job in invoice_jobs.orphaned_jobs(now)})
    enqueue_jobs(list(to_send.values()), now=now)
    return len(to_send)


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
    run_invoice_job(customer_id, datetime.fromisoformat(period_start))


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
    except invoice_jobs.PeriodNotEnded as exc:  # retrying cannot help; the scheduler will
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
    log.info("finalized %d invoices", len(invoices.finalize_due()))


@dramatiq.actor(actor_name=names.REFRESH_INVOICES, queue_name=names.BILLING_QUEUE, max_retries=10)
def refresh_invoices(customer_id: str, segment_start: str) -> None:
    """Recompute the draft that late usage in this segment affects, if there is one."""
    start = datetime.fromisoformat(segment_start)
    # Before reading: usage committed from here on asks for (and gets) a refresh of its own.
    refresh_markers.release(customer_id, start)
    invoices.refresh_after_late_usage(customer_id, start)


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


def enqueue_jobs(jobs: Sequence[Job], *, now: datetime | None = None) -> None:
    """Send one `generate_invoice` per job, its message id recorded on the row first (a
    message lost before it is sent is found as an orphan and sent again)."""
    messages = [
        (job, generate_invoice.message(job.customer_id, job.period_start.isoformat()))
        for job in jobs
    ]
    invoice_jobs.attach_messages(
        ((job.id, message.message_id) for job, message in messages), now or datetime.now(UTC)
    )
    broker = generate_invoice.broker
    for _, message in messages:
        broker.enqueue(message)


def run_jobs_inline(
    jobs: Iterable[Job],
    on_done: Callable[[Job], None] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Run jobs in this process, one after the other, without a broker (the embedded demo,
    `--inline`): each gets one attempt; one that fails is marked failed."""
    for job in jobs:
        try:
            run_invoice_job(job.customer_id, job.period_start, now=now)
        except Exception as exc:
            invoice_jobs.fail(job.customer_id, job.period_start, describe(exc))
        if on_done is not None:
            on_done(job)


def retry_jobs(
    job_ids: Sequence[int] | None, *, inline: bool = False, now: datetime | None = None
) -> list[Job]:
    """Run jobs again (None: every failed one). Regenerating an invoice that exists changes
    nothing, so a retry is always safe. Returns the jobs as they were re-queued."""
    ids = list(job_ids) if job_ids is not None else [job.id for job in invoice_jobs.failed_jobs()]
    if not ids:
        return []
    now = now or datetime.now(UTC)
    jobs = invoice_jobs.reset_for_retry(ids, now)
    if inline:
        run_jobs_inline(jobs, now=now)
    else:
        enqueue_jobs(jobs, now=now)
    return jobs
