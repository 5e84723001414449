"""Queue depths, the age of the oldest waiting message and the broker's durability, for
`meter ops stats` (and `meter worker`, which warns about the last one at start).

Dramatiq has no broker-neutral API for this: the Redis broker keeps each queue as a list of
message ids plus a hash of messages (`dramatiq:<queue>.msgs`, which also holds messages being
processed), delayed ones in `<queue>.DQ` and dead ones in `<queue>.XQ`; RabbitMQ reports counts
(a passive declare) and shows its oldest ready message when asked for one (`basic_get`, then a
`basic_nack` that puts it back at the head of its queue, unacknowledged by anyone).
"""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from tasks.broker import get_broker
from tasks.names import QUEUES


def _redis_stats(broker: RedisBroker) -> dict[str, Any]:
    client = broker.client
    ns = broker.namespace
    depths: dict[str, int] = {}
    dead = 0
    stamps: list[int] = []
    for queue in QUEUES:
        depths[queue] = int(client.hlen(f"{ns}:{queue}.msgs")) + int(
            client.hlen(f"{ns}:{queue}.DQ.msgs")
        )
        dead += int(client.zcard(f"{ns}:{queue}.XQ"))
        first = client.lindex(f"{ns}:{queue}", 0)
        if first is not None:
            raw = client.hget(f"{ns}:{queue}.msgs", first)
            if raw is not None:
                stamps.append(int(json.loads(raw)["message_timestamp"]))
    return _stats(depths, dead, stamps)


def _peek_timestamp_ms(broker: Any, queue: str) -> int | None:
    """`message_timestamp` of the message at the head of a RabbitMQ queue, left in place."""
    channel = broker.channel
    method, _properties, body = channel.basic_get(queue, auto_ack=False)
    if method is None:
        return None
    channel.basic_nack(method.delivery_tag, requeue=True)
    try:
        return int(dramatiq.Message.decode(body).message_timestamp)
    except (dramatiq.errors.DecodeError, TypeError, ValueError):  # not a Dramatiq message
        return None


def _rabbitmq_stats(broker: Any) -> dict[str, Any]:
    triples = {q: broker.get_queue_message_counts(q) for q in QUEUES}
    depths = {q: ready + delayed for q, (ready, delayed, _dead) in triples.items()}
    dead = sum(t[2] for t in triples.values())
    peeked = [_peek_timestamp_ms(broker, q) for q, (ready, _, _) in triples.items() if ready]
    return _stats(depths, dead, [stamp for stamp in peeked if stamp is not None])


def _stats(depths: dict[str, int], dead: int, stamps_ms: list[int]) -> dict[str, Any]:
    """The stats document; the age is that of the oldest head-of-queue message (0.0: none)."""
    age = max(time.time() - min(stamps_ms) / 1000, 0.0) if stamps_ms else 0.0
    return {"queues": {**depths, "dead": dead}, "oldest_message_age_s": round(age, 3)}


def queue_stats(broker: dramatiq.Broker | None = None) -> dict[str, Any]:
    """{"queues": {"ingest": n, "billing": n, "dead": n}, "oldest_message_age_s": s}: the
    messages waiting or delayed per queue, the dead ones, and how long the oldest message at
    the head of a queue has waited (0.0 when every queue is empty)."""
    broker = broker or get_broker()
    if isinstance(broker, RedisBroker):
        return _redis_stats(broker)
    if hasattr(broker, "get_queue_message_counts") and hasattr(broker, "channel"):
        return _rabbitmq_stats(broker)
    return {"queues": {}, "oldest_message_age_s": None}  # a broker we cannot look into


# --- broker durability: a Redis that keeps nothing on disk loses every queued batch ----------

PERSISTENCE_OFF = (
    "the broker's Redis ({where}) has persistence off (appendonly no): queued batches live "
    "only in its memory and a restart loses them, while producers were told they were sent. "
    "Use RabbitMQ (durable queues) or Redis with AOF "
    "(appendonly yes, appendfsync everysec: at most a second lost)."
)
PERSISTENCE_UNKNOWN = (
    "could not tell whether the broker's Redis ({where}) keeps queued batches on disk "
    "(CONFIG GET and INFO persistence both refused: {error}); without AOF a restart loses them."
)


def _aof_enabled(client: redis.Redis) -> bool:
    """AOF on? CONFIG GET first; managed Redis often deny CONFIG, so INFO persistence next."""
    try:
        return str(client.config_get("appendonly").get("appendonly", "no")).lower() == "yes"
    except redis.ResponseError:  # CONFIG renamed or denied by ACL
        return int(client.info("persistence").get("aof_enabled", 0)) == 1


def broker_warnings(broker: dramatiq.Broker | None = None) -> list[str]:
    """What an operator must know about the broker's durability (empty when all is well).

    RabbitMQ's queues are durable; a Redis broker needs AOF to survive a restart.
    """
    broker = broker or get_broker()
    if not isinstance(broker, RedisBroker):
        return []
    kwargs = broker.client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    try:
        if _aof_enabled(broker.client):
            return []
    except redis.RedisError as exc:
        return [PERSISTENCE_UNKNOWN.format(where=where, error=f"{type(exc).__name__}: {exc}")]
    return [PERSISTENCE_OFF.format(where=where)]
