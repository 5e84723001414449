"""What web apps import to record usage; the actors live in the submodules.

Importing `tasks` does not start any server or declare any actor: recording needs only the
broker, which is created on the first flush.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.producer import configure_recorder, default_recorder, flush_usage, record_usage
from tasks.recorder import BufferFull, UsageRecorder

if TYPE_CHECKING:
    from services.limits import LimitCheck


def check_limit(customer_id: str, metric: str) -> LimitCheck:
    """Usage of a metric this period against its included units (see `services.limits`).
    Imported on first use: recording alone needs no database."""
    from services.limits import check_limit as check

    return check(customer_id, metric)


__all__ = [
    "BufferFull",
    "UsageRecorder",
    "check_limit",
    "configure_recorder",
    "default_recorder",
    "flush_usage",
    "record_usage",
]
