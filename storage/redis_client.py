"""The process's Redis client (named so as not to shadow the `redis` package).

One client per process: redis-py's connection pool is thread-safe and re-creates its
connections in a forked child by itself; the fork hook below only makes the child build its own
client object as well.

With `METER_REDIS_CLUSTER` on, `REDIS_URL` names one node of a Redis Cluster and the client is
`storage.redis_cluster.CountersCluster`, a redis-py `RedisCluster` (it finds the other nodes and
follows the slots). The counters work on it unchanged: every key of a customer carries the
`{customer}` hash tag, so each Lua script and each multi-key command touches one slot;
pipelines are split per node by the client. The Dramatiq broker cannot live on a cluster (its
Lua touches many keys): set `BROKER_URL`.
"""

from __future__ import annotations

import os
import threading
from typing import cast

import redis

from storage.embedded import redis_url

# Ping an idle connection before reusing it, so a Redis restart costs a reconnect, not an error.
_HEALTH_CHECK_INTERVAL_S = 30

_lock = threading.Lock()
_client: redis.Redis | None = None


def get_redis() -> redis.Redis:
    """The shared client for REDIS_URL (or the embedded server); replies are bytes."""
    global _client
    current = _client
    if current is not None:
        return current
    with _lock:
        if _client is None:
            _client = _connect(redis_url())
        return _client


def _connect(url: str) -> redis.Redis:
    from storage.settings import get_settings

    if get_settings().METER_REDIS_CLUSTER:
        from storage.redis_cluster import CountersCluster

        # The commands the counters use (hashes, sets, scripts, pipelines) are the same API.
        cluster = CountersCluster.from_url(url, decode_responses=False)
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(
        url, decode_responses=False, health_check_interval=_HEALTH_CHECK_INTERVAL_S
    )


def reset_redis() -> None:
    """Close the shared client (tests, shutdown); the next `get_redis()` makes a new one."""
    global _client
    with _lock:
        current, _client = _client, None
    if current is not None:
        current.close()


def _forget_after_fork() -> None:
    global _client, _lock
    _client = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
