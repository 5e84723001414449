"""The scheduler process: two at once (one leads, the standby takes over when the leader dies),
and the jobs a new leader runs at once so that nothing missed while down is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.jobs import JOBS, JobSpec, register_jobs
from scheduler.process import SchedulerProcess
from storage.leader_lock import LeaderElection
from tests.conftest import SessionServers
from tests.scheduler.conftest import terminate_backend, wait_for

POLL = 0.2
TICK = JobSpec("tick", "tick", lambda: IntervalTrigger(seconds=0.2))


class Recorder:
    """A fake enqueue per scheduler: what each one sent, and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()

    def enqueue_for(self, name: str) -> Callable[[str], None]:
        def enqueue(actor: str) -> None:
            with self._lock:
                self.sent.append((name, actor, time.monotonic()))

        return enqueue

    def by(self, name: str, since: float = 0.0) -> list[str]:
        with self._lock:
            return [actor for who, actor, at in self.sent if who == name and at >= since]


@pytest.fixture
def start_scheduler(
    test_servers: SessionServers, election_key: int
) -> Iterator[Callable[..., SchedulerProcess]]:
    """Starts scheduler processes in threads (each with its own election); stops them all."""
    running: list[tuple[SchedulerProcess, threading.Thread]] = []

    def start(enqueue: Callable[[str], None], jobs: tuple[JobSpec, ...]) -> SchedulerProcess:
        election = LeaderElection(test_servers.database_url, key=election_key)
        process = SchedulerProcess(election, enqueue=enqueue, jobs=jobs, poll_interval=POLL)
        thread = threading.Thread(target=process.run, daemon=True)
        thread.start()
        running.append((process, thread))
        return process

    yield start
    for process, thread in running:
        process.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_two_schedulers_one_leads_and_the_standby_takes_over(
    start_scheduler: Callable[..., SchedulerProcess], test_servers: SessionServers
) -> None:
    recorder = Recorder()
    a = start_scheduler(recorder.enqueue_for("a"), (TICK,))
    wait_for(lambda: a.is_leading, timeout=5)
    b = start_scheduler(recorder.enqueue_for("b"), (TICK,))
    time.sleep(1.0)  # five polls of b, five ticks of a
    assert a.is_leading and not b.is_leading
    assert len(recorder.by("a")) >= 3
    assert recorder.by("b") == []

    killed_at = time.monotonic()
    terminate_backend(test_servers.database_url, a.election.backend_pid)
    took = wait_for(lambda: b.is_leading, timeout=5)
    # The standby's next poll, plus the server's own hand-over and slack for a busy machine.
    assert took < POLL + 2.0
    wait_for(lambda: not a.is_leading, timeout=5)  # the old leader stepped down, standby again
    # The old leader checks its session before each job: nothing fired after the kill, but
    # at most one enqueue that had already passed its check.
    assert len(recorder.by("a", since=killed_at + 0.01)) <= 1
    wait_for(lambda: len(recorder.by("b")) >= 3, timeout=5)
    assert b.is_leading and not a.is_leading

    b.stop()  # a clean shutdown releases the lock: the old leader comes back
    wait_for(lambda: a.is_leading, timeout=5)
    assert a.terms == 2 and b.terms == 1


def test_a_scheduler_restarted_after_missing_month_end_closes_periods_at_once(
    start_scheduler: Callable[..., SchedulerProcess], redis: object
) -> None:
    """The first scheduler is stopped before month end; the next one starts after it. The
    hourly close would next fire at the top of the next hour (and a re-registered job's missed
    run is dropped by APScheduler, #696), so the close must be enqueued on taking the lead."""
    recorder = Recorder()
    first = start_scheduler(recorder.enqueue_for("first"), JOBS)
    wait_for(lambda: first.is_leading, timeout=5)
    first.stop()
    wait_for(lambda: not first.is_leading, timeout=5)

    started = time.monotonic()
    restarted = start_scheduler(recorder.enqueue_for("restarted"), JOBS)
    # The other "whatever is due" jobs catch up too; no reconciliation has ever finished, so
    # the nightly one runs now as well.
    catch_up = {
        "close_due_periods",
        "finalize_due_invoices",
        "deliver_notifications",
        "reconcile_counters",
    }
    wait_for(lambda: catch_up <= set(recorder.by("restarted")), timeout=5)
    assert time.monotonic() - started < 5  # not at the next top of the hour
    assert recorder.by("restarted").count("close_due_periods") == 1
    assert restarted._scheduler is not None
    close_job = restarted._scheduler.get_job("close_due_periods")
    assert close_job.next_run_time > datetime.now(UTC)  # its trigger alone would have waited


def test_the_nightly_reconciliation_is_not_rerun_when_it_ran_recently(redis: object) -> None:
    from services.reconcile import reconcile

    scheduler = BackgroundScheduler(timezone=UTC)
    assert "reconcile_counters" in register_jobs(scheduler, lambda actor: None)
    reconcile()  # a full run is recorded as the last reconciliation
    scheduler = BackgroundScheduler(timezone=UTC)
    immediate = register_jobs(scheduler, lambda actor: None)
    assert "reconcile_counters" not in immediate
    assert "close_due_periods" in immediate
    later = datetime.now(UTC) + timedelta(days=2)
    assert "reconcile_counters" in register_jobs(BackgroundScheduler(), print, now=later)


def test_every_job_is_coalesced_and_never_dropped_as_a_misfire(redis: object) -> None:
    scheduler = BackgroundScheduler(timezone=UTC)
    register_jobs(scheduler, lambda actor: None)
    jobs = scheduler.get_jobs()
    assert {job.id for job in jobs} == {spec.id for spec in JOBS}
    for job in jobs:
        assert job.coalesce is True
        assert job.misfire_grace_time is None  # APScheduler's default (1 s) would skip late runs
        assert job.max_instances == 1


def test_runs_missed_while_stalled_become_exactly_one_late_run() -> None:
    """The process stalled for 5 s: the hourly job's one run, 5 s late, still runs (APScheduler's
    default grace of 1 s would drop it as a misfire), and a 0.2 s job's 25 missed runs become
    one run, not 25."""
    fired: list[str] = []
    stalled = datetime.now(UTC) - timedelta(seconds=5)
    jobs = (
        JobSpec("hourly", "hourly", lambda: IntervalTrigger(hours=1), catch_up=lambda now: True),
        JobSpec(
            "tick",
            "tick",
            lambda: IntervalTrigger(seconds=0.2, start_date=stalled),
            catch_up=lambda now: True,
        ),
    )
    scheduler = BackgroundScheduler(timezone=UTC)
    register_jobs(scheduler, fired.append, jobs=jobs, now=stalled)
    scheduler.start()
    try:
        wait_for(lambda: len(fired) >= 2, timeout=5)
        time.sleep(0.1)  # shorter than the interval: nothing else is due yet
        assert sorted(fired) == ["hourly", "tick"]
    finally:
        scheduler.shutdown(wait=True)
