"""A worker module for fault tests: `dramatiq tests.faults.fault_worker`.

The same actors as `workers.app`, except that the process SIGKILLs itself after a batch's
PostgreSQL commit and before its Redis write: the worst moment to die.
"""

from __future__ import annotations

import os
import signal

import tasks.ingest as ingest_actor
import workers.app  # noqa: F401


def _die_before_counters(deltas: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


ingest_actor.apply_deltas = _die_before_counters  # type: ignore[assignment]
