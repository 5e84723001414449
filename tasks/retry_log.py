"""What a failed ingest batch leaves in the log: its id, its size and the error, never its events.

Dramatiq's worker logs a failing message as `ingest_events({...every event...})` with a
traceback, at every one of up to 20 retries: megabytes of log per bad hour, and customers'
identifiers and properties in a place that keeps them longer than the ledger does. So:

- `summarised_failures` wraps the actor: a failure is logged here as one line and re-raised as
  `dramatiq.Retry`, which the worker does not log and the Retries middleware retries exactly as
  it would the original error (same backoff, same retry count, same `on_retry_exhausted`).
- `BatchSummaries` is a logging filter for Dramatiq's worker logger: whatever it still logs
  about an ingest message (the debug "Received message ...", a failure of `ingest_failed`)
  names the batch instead of printing it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.middleware import Interrupt

from pricing.decoding import EventsJSON
from pricing.errors import echo

log = logging.getLogger(f"meterline.{__name__}")

#: Longest error text quoted in a retry line (a database error can quote a whole statement).
ERROR_LIMIT = 300

Batch = Any


def describe_batch(batch: Batch) -> str:
    """`batch 5f0c… (500 events)`: what a log line says about a batch."""
    if not isinstance(batch, dict):
        return f"malformed batch ({type(batch).__name__})"
    events = batch.get("events")
    if isinstance(events, EventsJSON):  # as the worker's decoder leaves them (a failure: rare)
        events = events.items()
    count = f"{len(events)} events" if isinstance(events, list) else "no event list"
    return f"batch {echo(batch.get('batch_id'))} ({count})"


def describe_error(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    return (
        f"{type(error).__name__}: {echo(text, ERROR_LIMIT)[1:-1]}" if text else type(error).__name__
    )


def summarised_failures(actor_fn: Callable[[Batch], None]) -> Callable[[Batch], None]:
    """Log a failure of `actor_fn(batch)` as one line (batch id, event count, error) and hand
    it to the Retries middleware as `dramatiq.Retry`, chained to the original error."""

    @functools.wraps(actor_fn)
    def run(batch: Batch) -> None:
        try:
            actor_fn(batch)
        except dramatiq.Retry:
            raise
        except (Exception, Interrupt) as error:  # Interrupt: the time limit, a shutdown
            described = describe_error(error)
            log.warning("ingest of %s failed: %s", describe_batch(batch), described)
            raise dramatiq.Retry(described) from error

    return run


def last_error(message_data: dict[str, Any]) -> str | None:
    """The error a message last failed with, from the traceback the Retries middleware keeps
    in its options (its last line; for a batch, the `Retry` raised above, which carries it)."""
    options = message_data.get("options")
    trace = options.get("traceback") if isinstance(options, dict) else None
    if not isinstance(trace, str) or not trace.strip():
        return None
    line = trace.strip().splitlines()[-1]
    return line.removeprefix("dramatiq.errors.Retry: ")


class BatchSummaries(logging.Filter):
    """Replace the arguments of ingest messages among a log record's arguments by a summary:
    Dramatiq's worker logs `Received message ingest_events({...})`, the actor itself
    `Received args=({...},)`, both at debug level, and a failing `ingest_failed` at error."""

    def __init__(self, actor_names: Iterable[str]) -> None:
        super().__init__()
        self.actor_names = frozenset(actor_names)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(self._summary(arg) for arg in record.args)
        return True

    def _summary(self, arg: object) -> object:
        name = getattr(arg, "actor_name", None)
        if isinstance(name, str):  # a message: only ours are summarised
            return (
                f"{name}({_describe_args(getattr(arg, 'args', ()))})"
                if name in (self.actor_names)
                else arg
            )
        if isinstance(arg, tuple):  # an actor's own "Received args=%r" (only on our actors)
            return f"({_describe_args(arg)})"
        if isinstance(arg, dict) and ("events" in arg or "args" in arg):  # kwargs, a batch
            return _describe_args((arg,))
        return arg


def _describe_args(args: Iterable[object]) -> str:
    described = []
    for arg in args:
        if isinstance(arg, dict) and "message_id" in arg:  # ingest_failed's message data
            described.append(f"message of {describe_batch((arg.get('args') or [None])[0])}")
        elif isinstance(arg, dict) and "events" in arg:
            described.append(describe_batch(arg))
        elif isinstance(arg, dict):
            described.append(f"{{{len(arg)} keys}}")
        else:
            described.append(type(arg).__name__)
    return ", ".join(described)


def install_log_summaries(*actors: dramatiq.Actor[Any, Any]) -> None:
    """Put `BatchSummaries` for `actors` on Dramatiq's worker logger and on each actor's own."""
    summaries = BatchSummaries(actor.actor_name for actor in actors)
    for logger in (logging.getLogger("dramatiq.worker.WorkerThread"), *(a.logger for a in actors)):
        for old in [f for f in logger.filters if isinstance(f, BatchSummaries)]:
            logger.removeFilter(old)
        logger.addFilter(summaries)
