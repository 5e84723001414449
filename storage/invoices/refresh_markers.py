"""One pending invoice refresh per customer × segment: a marker in Redis.

The ingest actor asks for a draft to be recomputed whenever a batch adds usage to a segment
that has ended; a burst of late batches would queue one message each. `claim` sets the marker
(SET NX): the batch that sets it sends the refresh, later batches find it set and send nothing,
since the refresh that is waiting will read their usage. The refresh `release`s the marker
before it reads the rollups, so a batch that commits while a refresh runs sets it again and
queues the next refresh: no usage is missed. The TTL bounds how long a marker whose message was
never sent (the process died in between) holds refreshes back; the finalization recomputes a
stale draft anyway.
"""

from __future__ import annotations

from datetime import datetime

from storage.redis_client import get_redis

#: Seconds a marker lives if its refresh never runs.
TTL_S = 600


def _key(customer_id: str, segment_start: datetime) -> str:
    return f"ml:refresh:{int(segment_start.timestamp())}:{customer_id}"


def claim(customer_id: str, segment_start: datetime) -> bool:
    """True if no refresh of this customer × segment was waiting (the caller sends one)."""
    return bool(get_redis().set(_key(customer_id, segment_start), b"1", nx=True, ex=TTL_S))


def release(customer_id: str, segment_start: datetime) -> None:
    """A refresh starts (or could not be sent): the next late batch asks for another."""
    get_redis().delete(_key(customer_id, segment_start))
