"""What web apps import to record usage; the actors live in the submodules.

Importing `tasks` does not start any server or declare any actor: recording needs only the
broker, which is created on the first flush.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from tasks.producer import (
    configure_recorder,
    default_recorder,
    flush_usage,
    record_usage,
    recorder_in_use,
)
from tasks.recorder import BufferFull, UsageRecorder

if TYPE_CHECKING:
    from services.limits import LimitCheck


def check_limit(
    customer_id: str,
    metric: str,
    quantity: int | Decimal | str = 1,
    *,
    at: datetime | None = None,
) -> LimitCheck:
    """May the customer use `quantity` more of `metric` now (hard limit, spend cap), and
    should it be throttled? Counts the counters plus what this process's default recorder
    holds and has not seen ingested. After a customer's first check the counters come from a
    snapshot refreshed every `METER_LIMIT_REFRESH_MS` in the background, so the call waits on
    no network round trip (`services.limit_snapshot`). See `services.limits` and
    `pricing.limits`. Imported on first use: recording alone needs no database."""
    from services.limit_snapshot import default_snapshots
    from services.limits import check_limit as check

    return check(
        customer_id,
        metric,
        quantity,
        at=at,
        in_flight=recorder_in_use(),
        snapshots=default_snapshots(),
    )


__all__ = [
    "BufferFull",
    "UsageRecorder",
    "check_limit",
    "configure_recorder",
    "default_recorder",
    "flush_usage",
    "record_usage",
]
