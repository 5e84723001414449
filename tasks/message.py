"""The ingest message: what `UsageRecorder` sends, and what non-Python producers may enqueue
themselves (a contract).

A Dramatiq message on queue ``ingest`` for actor ``ingest_events``, encoded by Dramatiq's
default JSON encoder (UTF-8 JSON)::

    {"queue_name": "ingest", "actor_name": "ingest_events",
     "args": [BATCH], "kwargs": {}, "options": {},
     "message_id": "<uuid4, unique per message>",
     "message_timestamp": <int, milliseconds since the Unix epoch>}

    BATCH = {"batch_id": "<str, unique per batch; a re-send of the batch keeps it>",
             "events": [EVENT, ...]}                   # 1 to 20,000 events by default

    EVENT = {"event_id": "<str, 1-128 chars, unique per event; a re-send keeps it>",
             "customer_id": "<str, 1-128 chars>",
             "metric": "<str, 1-128 chars>",
             "quantity": "<decimal string, e.g. \\"1\\", \\"12.5\\", \\"-3.000001\\":
                          |quantity| < 10**18, at most 6 decimal places, never exponent form>",
             "timestamp": "<RFC 3339 with offset and microseconds,
                           e.g. \\"2026-11-27T10:00:00.123456+00:00\\" (this producer sends UTC)>",
             "properties": {"<key, 1-64 chars>": <str of at most 512 chars | number | bool>}}
                                                    # at most 50 keys; {} when there are none
    No text above may hold NUL or a lone surrogate (rules: pricing/events.py); the worker
    rejects such an event with a reason, and this producer refuses it in record().

Python producers send it with ``broker.enqueue(dramatiq.Message(queue_name="ingest",
actor_name="ingest_events", args=(batch,), kwargs={}, options={}))``, which needs no actor
declared. Others write it where the broker looks:

- Redis broker (namespace ``dramatiq``): add ``"redis_message_id": "<uuid4>"`` to ``options``,
  then, atomically (MULTI/EXEC or a Lua script):
  ``HSET dramatiq:ingest.msgs <redis_message_id> <json>`` and
  ``RPUSH dramatiq:ingest <redis_message_id>``.
- RabbitMQ: declare the durable queue ``ingest`` (Dramatiq declares it with
  ``x-dead-letter-exchange: ""`` and ``x-dead-letter-routing-key: "ingest.XQ"``) and publish
  the JSON to the default exchange with routing key ``ingest`` and ``delivery_mode=2``.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dramatiq
import msgspec

from pricing.events import PropertyValue

#: time.time_ns() at record time, or the caller's timestamp in UTC (as text from a spool).
Stamp = int | datetime | str
#: A recorded event waiting in the buffer: (event_id, customer_id, metric, quantity, stamp,
#: properties), checked by `record()`; turned into JSON in the flusher thread, not in record().
Buffered = tuple[str, str, str, int | float | Decimal, Stamp, dict[str, PropertyValue] | None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENCODER = msgspec.json.Encoder()


class BatchMessage(dramatiq.Message[Any]):
    """The recorder's message: the same JSON as Dramatiq's encoder writes (compact, UTF-8), by
    msgspec in C. A batch holds only checked text and numbers; anything msgspec would write
    differently from `json.dumps` (an integer beyond 64 bits) falls back to it."""

    def encode(self) -> bytes:
        data = self.asdict()
        try:
            return _ENCODER.encode(data)
        except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
            return json.dumps(data, separators=(",", ":")).encode("utf-8")


def encode_event(item: Buffered) -> dict[str, Any]:
    event_id, customer_id, metric, quantity, stamp, properties = item
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "metric": metric,
        "quantity": format_quantity(quantity),
        "timestamp": format_timestamp(stamp),
        "properties": properties or {},
    }


def format_quantity(quantity: int | float | Decimal) -> str:
    """Plain decimal text, never exponent form; a float as its shortest decimal."""
    if type(quantity) is int:
        return str(quantity)
    if type(quantity) is float:
        quantity = Decimal(repr(quantity))  # the shortest decimal that is this float
    return format(quantity, "f")


def format_timestamp(stamp: Stamp) -> str:
    if isinstance(stamp, int):
        micros = stamp // 1000
        seconds, fraction = divmod(micros, 1_000_000)
        return f"{_utc_second(seconds)}.{fraction:06d}+00:00"
    if isinstance(stamp, str):
        return stamp
    return stamp.isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    """Date and time of day of a Unix second: events of one batch share a few seconds."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
