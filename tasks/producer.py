"""The process-wide default recorder behind `record_usage`: what a web app calls.

`tasks.recorder` defines the recorder itself (buffer, sender thread, fork and exit handling);
this module only holds the one shared instance and the functions that use it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

from tasks.recorder import UsageRecorder

_default: UsageRecorder | None = None
_default_lock = threading.Lock()


def default_recorder() -> UsageRecorder:
    """The process-wide recorder behind `record_usage`, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = UsageRecorder()
    return _default


def configure_recorder(**kwargs: Any) -> UsageRecorder:
    """Replace the default recorder (UsageRecorder keyword arguments); the old one is closed
    after its buffered events are sent."""
    global _default
    new = UsageRecorder(**kwargs)
    with _default_lock:
        old, _default = _default, new
    if old is not None:
        old.close()
    return new


def record_usage(
    customer_id: str,
    metric: str,
    quantity: int | float | Decimal = 1,
    *,
    event_id: str | None = None,
    timestamp: datetime | None = None,
    properties: dict[str, Any] | None = None,
) -> str:
    """Record one usage event on the default recorder; see `UsageRecorder.record`."""
    return (_default or default_recorder()).record(
        customer_id,
        metric,
        quantity,
        event_id=event_id,
        timestamp=timestamp,
        properties=properties,
    )


def recorder_in_use() -> UsageRecorder | None:
    """The default recorder if this process has one (check_limit counts what it holds)."""
    return _default


def flush_usage(timeout: float | None = None) -> bool:
    """Block until the default recorder's buffered events are enqueued (False on timeout)."""
    recorder = _default
    return True if recorder is None else recorder.flush(timeout)
