"""The scheduler's job table: which actor is enqueued when. Jobs only enqueue; workers work.

A restart must never silently drop a missed run (APScheduler #696: a job added at start gets
its next run time recomputed from now, so a run due while the scheduler was down is gone). So:

- every job enqueues an idempotent "do whatever is due" actor (close every period that has
  ended and is not closed, finalize every draft past its grace, deliver every pending
  notification), never "close the period of date X";
- the frequent jobs and the hourly close run once as soon as a scheduler becomes leader, so a
  scheduler that was down at month end closes the month the moment it is back, and the nightly
  reconciliation (pruning) runs at once when the last one finished (was due) more than a day ago;
- `coalesce=True` with `misfire_grace_time=None`: runs missed while the process was stalled
  (suspended VM, long GC, slow broker) become exactly one late run, never zero; a late run of a
  "whatever is due" job is always right, and one is enough. `max_instances=1`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tasks import names

log = logging.getLogger(f"meterline.{__name__}")

#: Sends one message to the named actor.
Enqueue = Callable[[str], None]
#: Whether a job must run at once when leadership starts, given the time.
CatchUp = Callable[[datetime], bool]

#: The modules that declare the actors the jobs name.
ACTOR_MODULES = ("tasks.billing", "tasks.maintenance", "tasks.notify")


def always(now: datetime) -> bool:
    return True


def reconciliation_overdue(now: datetime) -> bool:
    """The last reconciliation over all customers finished more than a day ago (or never)."""
    from services.reconcile import last_reconciled_at

    last = last_reconciled_at()
    return last is None or now - last > timedelta(hours=25)


def pruning_overdue(now: datetime) -> bool:
    """The ingest bookkeeping holds rows a night's pruning should have deleted."""
    from storage.ledger.retention import pruning_overdue as overdue

    return overdue(now)


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: `actor` enqueued on `trigger`, and at leadership start when
    `catch_up` says so."""

    id: str
    actor: str
    trigger: Callable[[], BaseTrigger]
    catch_up: CatchUp | None = None


JOBS: tuple[JobSpec, ...] = (
    JobSpec(
        "close_due_periods",
        names.CLOSE_DUE_PERIODS,
        # Just after each hour: periods end at local midnights, most on the hour in UTC.
        lambda: CronTrigger(minute=0, second=15, timezone=UTC),
        catch_up=always,
    ),
    JobSpec(
        "finalize_due_invoices",
        names.FINALIZE_DUE_INVOICES,
        lambda: IntervalTrigger(minutes=1),
        catch_up=always,
    ),
    JobSpec(
        "deliver_notifications",
        names.DELIVER_NOTIFICATIONS,
        lambda: IntervalTrigger(seconds=10),
        catch_up=always,
    ),
    JobSpec(
        "reconcile_counters",
        names.RECONCILE_COUNTERS,
        lambda: CronTrigger(hour=3, minute=30, timezone=UTC),
        catch_up=reconciliation_overdue,
    ),
    JobSpec(
        "prune_ingest_history",
        names.PRUNE_INGEST_HISTORY,
        lambda: CronTrigger(hour=4, minute=15, timezone=UTC),
        catch_up=pruning_overdue,
    ),
)


def enqueue_actor(actor_name: str) -> None:
    """Send a message with no arguments to `actor_name` on the shared broker.

    The actor modules are imported here, lazily, so that the scheduler sends each message with
    the queue and options its actor declares.
    """
    from tasks.broker import get_broker

    broker = get_broker()
    for module in ACTOR_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a missing module only matters to the jobs that need it
            log.warning("scheduler: cannot import %s: %s", module, exc)
    broker.get_actor(actor_name).send()


def register_jobs(
    scheduler: BaseScheduler,
    fire: Enqueue,
    *,
    jobs: tuple[JobSpec, ...] = JOBS,
    now: datetime | None = None,
) -> list[str]:
    """Add every job to `scheduler`, each calling `fire(actor)`; return the ids of the jobs
    that run at once (catch-up), which are due now instead of at their trigger's next time."""
    now = now or datetime.now(UTC)
    immediate: list[str] = []
    for job in jobs:
        catch_up = False
        if job.catch_up is not None:
            try:
                catch_up = job.catch_up(now)
            except Exception:  # a catch-up check that fails must not cost the schedule
                log.exception("scheduler: catch-up check of %s failed; running it now", job.id)
                catch_up = True
        options: dict[str, object] = {"next_run_time": now} if catch_up else {}
        scheduler.add_job(
            fire,
            job.trigger(),
            args=[job.actor],
            id=job.id,
            name=job.id,
            coalesce=True,
            misfire_grace_time=None,
            max_instances=1,
            replace_existing=True,
            **options,
        )
        if catch_up:
            immediate.append(job.id)
    return immediate
