"""The Lua script behind the Redis counters (see `storage.usage.counters` for the protocol).

The source lives in `lua/*.lua` beside this module (shipped as package data). The script runs
atomically on one hash (one `{customer}` slot, so it is Redis Cluster safe). It merges nothing:
it writes a copy of the segment's rollups when the copy's version is newer than the hash's.

`scripts_for(client)` registers the scripts once per client and hands back the same
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

NAMES = ("put",)


@cache
def source(name: str) -> str:
    """The Lua source of script `name` (one of `NAMES`), read once from `lua/<name>.lua`."""
    if name not in NAMES:
        raise ValueError(f"script: no Lua script named {name!r}")
    return resources.files("storage.usage").joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True)
class Scripts:
    """The counters' scripts registered on one client; call with `client=` a pipeline of it."""

    put: Script  # write a copy of the rollups unless the hash is as new or newer


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
