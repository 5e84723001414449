"""Prompt webhook delivery: a delivery run is sent as soon as a message that wrote outbox rows
has been processed, instead of waiting for the scheduler's sweep (every 10 s).

Whatever actor writes the rows (ingest writing alerts, the billing actors finalizing invoices)
needs no code of its own for this: `storage.outbox.enqueue` counts the rows each thread
writes, and this middleware, after the actor has returned (its transactions committed), sends
one `deliver_notifications` message when the count is not zero. A message whose transaction
rolled back may send a run that finds nothing: harmless. The sweep still runs for retries and
for rows written outside a worker (the CLI).
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from storage import outbox
from tasks import names

log = logging.getLogger(f"meterline.{__name__}")


def delivery_message() -> dramatiq.Message[Any]:
    """A `deliver_notifications` message (sent by name: the actor's module need not be
    imported by the sender)."""
    return dramatiq.Message(
        queue_name=names.NOTIFY_QUEUE,
        actor_name=names.DELIVER_NOTIFICATIONS,
        args=(),
        kwargs={},
        options={},
    )


def request_delivery(broker: dramatiq.Broker) -> None:
    """Ask a worker for a delivery run now."""
    broker.declare_queue(names.NOTIFY_QUEUE)  # a no-op once declared
    broker.enqueue(delivery_message())


class PromptDelivery(Middleware):
    """After each processed message that wrote outbox rows, enqueue a delivery run."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        outbox.take_written()  # what this thread wrote before is not this message's

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        written = outbox.take_written()
        if not written or message.actor_name == names.DELIVER_NOTIFICATIONS:
            return
        try:
            request_delivery(broker)
        except Exception:  # the sweep delivers them anyway; never fail the message for it
            log.exception("could not request a delivery run for %s outbox row(s)", written)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        outbox.take_written()
