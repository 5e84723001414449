"""Worker modules for alert fault tests: the actors of `workers.app`, except that the process
SIGKILLs itself at a chosen moment of its first batch that crosses a threshold.

`dramatiq tests.alerts.fault_worker:before_alerts`: after the ingest commit and the counters,
before the alerts are evaluated. `...:after_alerts`: after the alert and outbox rows
committed, before the delivery is asked for.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import tasks.ingest as ingest_actor
import workers.app
from services import alerts


def _die(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def before_alerts() -> Any:
    ingest_actor.check_segments = _die  # type: ignore[attr-defined]
    return workers.app.broker


def after_alerts() -> Any:
    check = alerts.check_segments

    def check_then_die(*args: Any, **kwargs: Any) -> Any:
        if check(*args, **kwargs):
            _die()
        return []

    ingest_actor.check_segments = check_then_die  # type: ignore[attr-defined]
    return workers.app.broker
