"""The scheduler process: standby until it wins the leader election, then leader running the
job table until it loses the lock or is stopped (`meter scheduler`, the Procfile's line).

Each leadership term gets a fresh APScheduler `BackgroundScheduler` (in-memory job store,
nothing shared between processes); the catch-up runs of the job table happen at the start of
every term, so a standby that takes over also catches up on what the old leader missed. The
main thread polls: on standby it tries for the lock, while leading it checks the lock's
session. Each job checks the session too before it enqueues, so a leader that has lost its
session stops firing at once, not at the next poll.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.jobs import JOBS, Enqueue, JobSpec, enqueue_actor, register_jobs
from storage.leader_lock import LeaderElection

log = logging.getLogger(f"meterline.{__name__}")

DEFAULT_POLL_INTERVAL = 5.0


class SchedulerProcess:
    """One scheduler: `run()` blocks until `stop()`; `is_leading` says which role it has."""

    def __init__(
        self,
        election: LeaderElection,
        *,
        enqueue: Enqueue = enqueue_actor,
        jobs: tuple[JobSpec, ...] = JOBS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        if poll_interval * 2 > election.lease_seconds:
            raise ValueError(
                f"poll_interval: {poll_interval}s; the leader renews its lease on each poll, so"
                f" two polls must fit in the lease ({election.lease_seconds}s)"
            )
        self.election = election
        self.enqueue = enqueue
        self.jobs = jobs
        self.poll_interval = poll_interval
        self._scheduler: BackgroundScheduler | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.terms = 0  # leadership terms started, for logs and tests

    @property
    def is_leading(self) -> bool:
        return self._scheduler is not None

    def run(self) -> None:
        """Poll until stopped; leave the jobs and the lock behind cleanly on the way out."""
        log.info("scheduler: started, polling every %ss", self.poll_interval)
        try:
            while not self._stopping.is_set():
                try:
                    self.step()
                except Exception:  # a long-running process outlives a bad poll
                    log.exception("scheduler: poll failed; stepping down until the next one")
                    self._stop_jobs()
                    self.election.release()
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        finally:
            self._stop_jobs()
            self.election.release()
            log.info("scheduler: stopped")

    def step(self) -> None:
        """One poll: take the lead if the lock is free, step down if its session is gone."""
        if self._scheduler is None:
            if self.election.try_acquire():
                self._start_jobs()
        elif not self.election.check():
            log.warning("scheduler: lost the leader lock; stopping the jobs, back to standby")
            self._stop_jobs()

    def stop(self) -> None:
        """Ask `run()` to return (from a signal handler or another thread)."""
        self._stopping.set()
        self._wake.set()

    def _fire(self, actor: str) -> None:
        if not self.election.check():
            log.warning("scheduler: not the leader any more: %s not enqueued", actor)
            self._wake.set()  # the main loop steps down now
            return
        self.enqueue(actor)
        log.info("scheduler: enqueued %s", actor)

    def _start_jobs(self) -> None:
        scheduler = BackgroundScheduler(timezone=UTC)
        immediate = register_jobs(scheduler, self._fire, jobs=self.jobs)
        scheduler.start()
        self._scheduler = scheduler
        self.terms += 1
        log.info(
            "scheduler: leading (session %s); jobs %s; running now: %s",
            self.election.backend_pid,
            [job.id for job in self.jobs],
            immediate,
        )

    def _stop_jobs(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            # Not waiting: a job in flight only enqueues an idempotent actor.
            scheduler.shutdown(wait=False)


def run(*, poll_interval: float = DEFAULT_POLL_INTERVAL, url: str | None = None) -> None:
    """Run a scheduler process against the configured database until SIGTERM or SIGINT."""
    from storage.embedded import database_url
    from storage.settings import get_settings

    lease = get_settings().METER_LEADER_LEASE_SECONDS
    election = LeaderElection(url or database_url(), lease_seconds=lease)
    process = SchedulerProcess(election, poll_interval=poll_interval)

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("scheduler: signal %s, stopping", signum)
        process.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    process.run()
