"""A scheduler process for fault tests: `python -m tests.faults.scheduler_child URL KEY LEASE`.

The real `SchedulerProcess` and `LeaderElection` on the lock KEY with a lease of LEASE seconds,
polling every 0.2 s, running one job every 0.2 s whose enqueue prints `enqueued tick <pid>`:
what each process fired shows on its stdout, in order.
"""

from __future__ import annotations

import logging
import os
import sys

from apscheduler.triggers.interval import IntervalTrigger

from scheduler.jobs import JobSpec
from scheduler.process import SchedulerProcess
from storage.leader_lock import LeaderElection

POLL = 0.2


def _enqueue(actor: str) -> None:
    print("enqueued", actor, os.getpid(), flush=True)


def main(url: str, key: str, lease: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    jobs = (JobSpec("tick", "tick", lambda: IntervalTrigger(seconds=POLL)),)
    election = LeaderElection(url, key=int(key), lease_seconds=float(lease))
    SchedulerProcess(election, enqueue=_enqueue, jobs=jobs, poll_interval=POLL).run()


if __name__ == "__main__":
    main(*sys.argv[1:4])
