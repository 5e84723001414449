"""The Lua scripts behind the Redis counters (see `storage.usage.counters` for the protocol).

The source lives in `lua/*.lua` beside this module (shipped as package data). Each script runs
atomically on one hash (one `{customer}` slot, so they are Redis Cluster safe). `_p` counts the
staged deltas (`pend:<version>` fields) so the fast path can tell, without listing the hash,
that it must leave ordering to the general path.

`scripts_for(client)` registers the four scripts once per client and hands back the same
objects on every later call. The registry holds its clients weakly (the scripts see their
client through a weak proxy), so a client that is dropped (`reset_redis`, a fork) takes its
entry with it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

NAMES = ("fast", "stage", "cas", "load")


@cache
def source(name: str) -> str:
    """The Lua source of script `name` (one of `NAMES`), read once from `lua/<name>.lua`."""
    if name not in NAMES:
        raise ValueError(f"script: no Lua script named {name!r}")
    return resources.files("storage.usage").joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True)
class Scripts:
    """The counters' scripts registered on one client; call with `client=` a pipeline of it."""

    fast: Script  # merge a delta inside Redis when the hash is one version behind
    stage: Script  # park a delta under its version (the general path)
    cas: Script  # compare-and-set the state folded in Python
    load: Script  # replace the state with a PostgreSQL snapshot


_registered: weakref.WeakKeyDictionary[redis.Redis, Scripts] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def scripts_for(client: redis.Redis) -> Scripts:
    """The scripts registered on `client`, registering them on its first use only."""
    found = _registered.get(client)
    if found is not None:
        return found
    with _lock:
        found = _registered.get(client)
        if found is None:
            # A Script keeps its client; a proxy keeps the registry from keeping it alive.
            proxy = weakref.proxy(client)
            found = Scripts(*(Script(proxy, source(name)) for name in NAMES))
            _registered[client] = found
    return found
