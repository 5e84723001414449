"""What web apps import to record usage; the actors live in the submodules.

Importing `tasks` does not start any server or declare any actor: recording needs only the
broker, which is created on the first flush.
"""

from tasks.recorder import (
    BufferFull,
    UsageRecorder,
    configure_recorder,
    default_recorder,
    flush_usage,
    record_usage,
)

__all__ = [
    "BufferFull",
    "UsageRecorder",
    "configure_recorder",
    "default_recorder",
    "flush_usage",
    "record_usage",
]
