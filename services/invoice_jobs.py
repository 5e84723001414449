"""Invoice jobs: one per customer × billing period that a close fans out, followed through its
attempts so that ops can see what failed and why, and run it again.

The rules live here: what a close covers, which jobs need a message (new ones and orphans),
what one attempt does to its row, which errors are worth another attempt. Sending a message is
the caller's (`tasks.billing` passes its `enqueue`): nothing here knows about Dramatiq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from services import invoicing, periods
from storage.catalog.cache import customer_context
from storage.db import Connection
from storage.errors import InvalidInput, NotFound
from storage.invoices import jobs
from storage.invoices.jobs import Job, JobKey

#: Sends one message per job, its message id recorded on the row (stamped `now`) first.
Enqueue = Callable[[Sequence[Job], datetime], None]

GENERATE_MAX_RETRIES = 5
#: Errors that another attempt cannot fix (no such customer, a period that has not ended).
PERMANENT_ERRORS = (InvalidInput, NotFound)


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
        jobs.succeed(customer_id, period_start, invoice_id, conn=conn)
        recorded.append(invoice_id)

    try:
        if jobs.start_attempt(customer_id, period_start) is None:
            period = periods.period_of(customer_context(customer_id), period_start)
            jobs.start_attempt(customer_id, period_start, period)
        invoice = invoicing.generate(
            customer_id, period_start, now=now, on_written=succeed_with_invoice
        )
    except Exception as exc:
        jobs.record_error(customer_id, period_start, describe(exc))
        raise
    if not recorded:  # nothing was written: the invoice already existed as it is
        jobs.succeed(customer_id, period_start, invoice.id)
    return invoice.id


def fan_out_period(
    period_label: str | None, enqueue: Enqueue, now: datetime | None = None
) -> list[int]:
    """One job (and message) per customer whose period with this label has ended at `now`
    (default: the clock; label None: each customer's last ended period); jobs that exist are
    not sent again unless orphaned. A label that has ended for no customer yet raises
    `PeriodNotEnded`. Returns the ids of every job of the close."""
    now = now or datetime.now(UTC)
    return fan_out_keys(periods.keys_for_label(period_label, now), enqueue, now)


def fan_out_keys(
    keys: Sequence[JobKey], enqueue: Enqueue, now: datetime | None = None
) -> list[int]:
    """One job (and message) per customer × period; jobs that exist are not sent again
    unless orphaned. Returns the ids of every job."""
    now = now or datetime.now(UTC)
    opened, created = jobs.open_jobs(keys, now)
    enqueue([job for job in opened if job.id in created or job.is_orphan(now)], now)
    return [job.id for job in opened]


def fan_out_due_periods(enqueue: Enqueue, now: datetime | None = None) -> int:
    """A job (and message) for every period that has ended by `now` (default: the clock) since
    its customer started and has none yet; orphaned jobs are sent again. Returns how many
    messages went out."""
    now = now or datetime.now(UTC)
    opened, created = jobs.open_jobs(periods.due_keys(now), now)
    to_send = {job.id: job for job in opened if job.id in created}
    to_send.update({job.id: job for job in jobs.orphaned_jobs(now)})
    enqueue(list(to_send.values()), now)
    return len(to_send)


def run_jobs_inline(
    to_run: Iterable[Job],
    on_done: Callable[[Job], None] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Run jobs in this process, one after the other, without a broker (the embedded demo,
    `--inline`): each gets one attempt; one that fails is marked failed."""
    for job in to_run:
        try:
            run_invoice_job(job.customer_id, job.period_start, now=now)
        except Exception as exc:
            jobs.fail(job.customer_id, job.period_start, describe(exc))
        if on_done is not None:
            on_done(job)


def retry_jobs(
    job_ids: Sequence[int] | None,
    enqueue: Enqueue | None,
    *,
    now: datetime | None = None,
) -> list[Job]:
    """Run jobs again (None: every failed one), through `enqueue`, or here when it is None.
    Regenerating an invoice that exists changes nothing, so a retry is always safe. Returns
    the jobs as they were re-queued."""
    ids = list(job_ids) if job_ids is not None else [job.id for job in jobs.failed_jobs()]
    if not ids:
        return []
    now = now or datetime.now(UTC)
    reset = jobs.reset_for_retry(ids, now)
    if enqueue is None:
        run_jobs_inline(reset, now=now)
    else:
        enqueue(reset, now)
    return reset
