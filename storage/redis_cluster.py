"""The Redis Cluster client of the counters (`METER_REDIS_CLUSTER`): redis-py's `RedisCluster`
whose pipelines may also run the counters' Lua scripts.

redis-py refuses EVALSHA in a cluster pipeline: it cannot know that a script touches one slot
only. The counters' scripts do (every key of a customer carries the `{customer}` hash tag, and
each script names its one hash in KEYS), so the pipeline here queues EVALSHA like any command
routed by its first key, and before it executes makes sure every script it queued is loaded on
every primary (`SCRIPT LOAD` goes to all of them; done once per client, and again after a
NOSCRIPT error, which a restarted or new node gives).
"""

from __future__ import annotations

import hashlib
import threading
from functools import cache
from typing import Any, cast

from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError


@cache
def _known_scripts() -> dict[str, str]:
    """sha1 → source of every Lua script Meterline runs in a pipeline."""
    from storage.usage.scripts import NAMES, source

    texts = [source(name) for name in NAMES]
    return {hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest(): text for text in texts}


class CountersCluster(RedisCluster):
    """`RedisCluster` whose `pipeline()` accepts the counters' scripts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded_scripts: set[str] = set()
        self.scripts_lock = threading.Lock()

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe: Any = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        pipe.__class__ = ScriptingClusterPipeline  # same state, one more command allowed
        pipe.owner = self
        pipe.queued_scripts = set()
        return cast(ClusterPipeline, pipe)


class ScriptingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that queues EVALSHA of a known script (routed by its first key)."""

    owner: CountersCluster
    queued_scripts: set[str]

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if sha not in _known_scripts():
            raise ValueError(f"evalsha: script {sha} is not one of Meterline's")
        if numkeys < 1:
            raise ValueError("evalsha: a pipelined script must name its key (numkeys >= 1)")
        self.queued_scripts.add(sha)
        return self.execute_command(  # type: ignore[no-untyped-call]
            "EVALSHA", sha, numkeys, *keys_and_args
        )

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._load_scripts()
        try:
            return super().execute(raise_on_error)
        except NoScriptError:
            with self.owner.scripts_lock:  # a node lost its scripts: load them all next time
                self.owner.loaded_scripts.clear()
            raise
        finally:
            self.queued_scripts = set()

    def _load_scripts(self) -> None:
        missing = self.queued_scripts - self.owner.loaded_scripts
        if not missing:
            return
        with self.owner.scripts_lock:
            for sha in missing:
                self.owner.script_load(_known_scripts()[sha])  # on every primary
                self.owner.loaded_scripts.add(sha)
