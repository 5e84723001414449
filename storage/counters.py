"""Real-time usage counters in Redis: one hash per customer × billing segment.

Each ingest transaction bumps the segment's `version` in PostgreSQL and stores its delta; the
counter hash records the version it reflects (`_v`). A delta is first staged as `pend:<v>` and
then folded in strictly in version order by a compare-and-set, so

- a redelivered batch changes nothing (its version is already folded in, or its staging
  field already exists),
- two workers finishing out of order still apply their deltas in commit order,
- a worker killed after its PostgreSQL commit leaves a gap that its redelivery fills; until
  then a reader sees the staged delta that cannot be folded and answers from (and rebuilds
  the hash from) the rollups instead.

Values are exact decimal strings merged in Python by `pricing` (never INCRBYFLOAT). Distinct
values for `unique_count` live in a set per metric (SADD is idempotent by nature). All keys of a
customer share the `{customer}` hash tag so a Redis Cluster keeps them on one slot.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pricing.aggregations import MetricState
from pricing.metering import SegmentState
from storage import rollups
from storage.redis_client import get_redis

RETENTION = 40 * 86400  # counters outlive their segment by the late-event window

_STAGE = """
local current = redis.call('HGET', KEYS[1], '_v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSETNX', KEYS[1], 'pend:' .. ARGV[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] hash; ARGV: expected version ('' = none), new version, n_set, field, value...,
# then fields to delete
_CAS = """
local current = redis.call('HGET', KEYS[1], '_v') or ''
if current ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('HSET', KEYS[1], '_v', ARGV[2])
return 1
"""

# Replace the state with a PostgreSQL snapshot unless the hash is already newer.
_LOAD = """
local current = redis.call('HGET', KEYS[1], '_v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
local fields = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(fields) do
  if string.sub(f, 1, 5) ~= 'pend:' then redis.call('HDEL', KEYS[1], f) end
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], '_v', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"""


def _tag(customer_id: str) -> str:
    if "{" in customer_id or "}" in customer_id:
        return hashlib.sha1(customer_id.encode()).hexdigest()
    return customer_id


def segment_key(customer_id: str, start: datetime) -> str:
    return f"ml:{{{_tag(customer_id)}}}:s:{int(start.timestamp())}"


def unique_key(customer_id: str, start: datetime, metric: str) -> str:
    return f"ml:{{{_tag(customer_id)}}}:u:{int(start.timestamp())}:{metric}"


def state_to_fields(state: SegmentState) -> dict[str, str]:
    fields = {f"m:{k}": json.dumps(state.metric_json(v)) for k, v in state.metrics.items()}
    fields.update({f"c:{k}": json.dumps(state.charge_json(*v)) for k, v in state.charges.items()})
    return fields


def state_from_fields(fields: dict[str, str]) -> SegmentState:
    state = SegmentState()
    for name, raw in fields.items():
        if name.startswith("m:"):
            state.metrics[name[2:]] = MetricState.from_dict(json.loads(raw))
        elif name.startswith("c:"):
            state.charges[name[2:]] = state.charge_from_json(json.loads(raw))
    return state


@dataclass(frozen=True)
class CounterDelta:
    """One ingest transaction's effect on one customer × segment, at `version`."""

    customer_id: str
    start: datetime
    end: datetime
    version: int
    state: SegmentState
    uniques: dict[str, list[str]]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "version": self.version,
            "state": self.state.to_json(),
            "uniques": self.uniques,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CounterDelta:
        return cls(
            customer_id=data["customer_id"],
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            version=int(data["version"]),
            state=SegmentState.from_json(data["state"]),
            uniques={k: list(v) for k, v in data.get("uniques", {}).items()},
        )


@dataclass(frozen=True)
class SegmentCounters:
    version: int
    state: SegmentState
    unique_counts: dict[str, int]


def _expire_at(end: datetime) -> int:
    return int(end.timestamp()) + RETENTION


def apply_deltas(deltas: Sequence[CounterDelta]) -> None:
    """Apply each delta exactly once, in version order. Safe to call any number of times.

    The common case (the hash is at the version just before the delta's) merges directly with
    one compare-and-set; anything else (a gap, a lost CAS race, a hash Redis lost) takes the
    general path: stage the delta under its version, then fold what can be folded.
    """
    if not deltas:
        return
    redis = get_redis()
    by_key = {segment_key(d.customer_id, d.start): d for d in deltas}
    pipe = redis.pipeline(transaction=False)
    for key, delta in by_key.items():
        pipe.hgetall(key)
        for metric, values in delta.uniques.items():
            if values:
                ukey = unique_key(delta.customer_id, delta.start, metric)
                pipe.sadd(ukey, *values)
                pipe.expireat(ukey, _expire_at(delta.end))
    replies = iter(pipe.execute())
    hashes = {}
    for key, delta in by_key.items():
        hashes[key] = _decode(next(replies))
        for values in delta.uniques.values():
            if values:
                next(replies), next(replies)
    cas = redis.register_script(_CAS)
    pipe = redis.pipeline(transaction=False)
    direct: list[str] = []
    general: list[CounterDelta] = []
    for key, delta in by_key.items():
        fields = hashes[key]
        current = fields.get("_v")
        if current is not None and int(current) >= delta.version:
            continue  # already applied
        if not fields:
            ready = delta.version == 1  # a new segment: its base is the empty state
        else:
            clean = not any(name.startswith("pend:") for name in fields)
            ready = clean and current is not None and int(current) == delta.version - 1
        if ready:
            merged = _merge_fields(fields, delta.state)
            flat = [x for pair in merged.items() for x in pair]
            args = [current or "", delta.version, len(merged), *flat]
            cas(keys=[key], args=args, client=pipe)
            pipe.expireat(key, _expire_at(delta.end))
            direct.append(key)
        else:
            general.append(delta)
    results = pipe.execute() if direct else []
    for key, ok in zip(direct, results[::2], strict=True):
        if not ok:
            general.append(by_key[key])
    if general:
        _stage_and_settle(general)


def _merge_fields(fields: dict[str, str], delta: SegmentState) -> dict[str, str]:
    """The hash fields a delta changes, merged with their current values."""
    merged: dict[str, str] = {}
    for name, state in delta.metrics.items():
        raw = fields.get(f"m:{name}")
        if raw is not None:
            state = MetricState.from_dict(json.loads(raw)).merge(state)
        merged[f"m:{name}"] = json.dumps(SegmentState.metric_json(state))
    for name, (charge, charge_state) in delta.charges.items():
        raw = fields.get(f"c:{name}")
        if raw is not None:
            _, old = SegmentState.charge_from_json(json.loads(raw))
            charge_state = old.merge(charge_state, charge)
        merged[f"c:{name}"] = json.dumps(SegmentState.charge_json(charge, charge_state))
    return merged


def _stage_and_settle(deltas: Sequence[CounterDelta]) -> None:
    redis = get_redis()
    stage = redis.register_script(_STAGE)
    pipe = redis.pipeline(transaction=False)
    keys: dict[str, CounterDelta] = {}
    for delta in deltas:
        key = segment_key(delta.customer_id, delta.start)
        keys[key] = delta
        payload = json.dumps({"at": time.time(), "state": delta.state.to_json()})
        stage(keys=[key], args=[delta.version, payload, _expire_at(delta.end)], client=pipe)
    pipe.execute()
    # Redis lost these segments (restart, flush): rebuild them now rather than let staged
    # deltas pile up until the next read.
    reload_segments([(keys[k].customer_id, keys[k].start, keys[k].end) for k in settle(keys)])


def reload_segments(segments: Iterable[tuple[str, datetime, datetime]]) -> None:
    """Bring these segments' counters up to their rollups (a no-op where Redis is as new).
    Used when a batch is redelivered: its first delivery may have died before its Redis write."""
    for customer_id, start, end in segments:
        snap = rollups.snapshot(customer_id, start)
        load_segment(customer_id, start, end, snap.version, snap.state, snap.uniques)


def settle(keys: Iterable[str]) -> list[str]:
    """Fold staged deltas into each hash in version order (compare-and-set, retried).
    Returns the keys that cannot be folded because Redis has no base state for them."""
    redis = get_redis()
    cas = redis.register_script(_CAS)
    todo = list(dict.fromkeys(keys))
    unhydrated: list[str] = []
    for _ in range(50):
        if not todo:
            return unhydrated
        pipe = redis.pipeline(transaction=False)
        for key in todo:
            pipe.hgetall(key)
        hashes = pipe.execute()
        pipe = redis.pipeline(transaction=False)
        attempted = []
        for key, raw in zip(todo, hashes, strict=True):
            fields = _decode(raw)
            if "_v" not in fields and "pend:1" not in fields:
                unhydrated.append(key)
                continue
            plan = _fold(fields)
            if plan is None:
                continue
            expected, new_version, fields, delete = plan
            flat = [x for pair in fields.items() for x in pair]
            cas(
                keys=[key],
                args=[expected, new_version, len(fields), *flat, *delete],
                client=pipe,
            )
            attempted.append(key)
        results = pipe.execute() if attempted else []
        todo = [key for key, ok in zip(attempted, results, strict=True) if not ok]
    raise RuntimeError(f"counters: could not settle {len(todo)} key(s) after 50 attempts")


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _fold(fields: dict[str, str]) -> tuple[str, int, dict[str, str], list[str]] | None:
    """The compare-and-set that folds contiguous pending deltas, or None if nothing to do."""
    # Version 1 is the segment's first batch: its base is the empty state at version 0.
    current = int(fields.get("_v", 0))
    pending = {int(k[5:]): k for k in fields if k.startswith("pend:")}
    stale = [name for version, name in pending.items() if version <= current]
    version = current
    state = state_from_fields(fields)
    changed: set[str] = set()
    while version + 1 in pending:
        version += 1
        delta = SegmentState.from_json(json.loads(fields[pending[version]])["state"])
        state = state.merge(delta)
        changed.update(f"m:{k}" for k in delta.metrics)
        changed.update(f"c:{k}" for k in delta.charges)
    if version == current and not stale:
        return None
    new_fields = {k: v for k, v in state_to_fields(state).items() if k in changed}
    folded = [pending[v] for v in range(current + 1, version + 1)]
    return fields.get("_v", ""), version, new_fields, stale + folded


def read_segment(
    customer_id: str, start: datetime, unique_metrics: Sequence[str]
) -> SegmentCounters | None:
    """The counters of a segment, or None when they must be rebuilt (missing, or a delta
    staged that cannot be folded yet: a gap in the versions)."""
    redis = get_redis()
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(segment_key(customer_id, start))
    for metric in unique_metrics:
        pipe.scard(unique_key(customer_id, start, metric))
    raw, *cards = pipe.execute()
    fields = _decode(raw)
    if "_v" not in fields or any(name.startswith("pend:") for name in fields):
        return None
    return SegmentCounters(
        version=int(fields["_v"]),
        state=state_from_fields(fields),
        unique_counts=dict(zip(unique_metrics, (int(c) for c in cards), strict=True)),
    )


def load_segment(
    customer_id: str,
    start: datetime,
    end: datetime,
    version: int,
    state: SegmentState,
    uniques: dict[str, list[str]],
) -> None:
    """Write a PostgreSQL snapshot into Redis (unless Redis is already newer), then fold any
    deltas staged after that version."""
    redis = get_redis()
    key = segment_key(customer_id, start)
    expire = _expire_at(end)
    for metric, values in uniques.items():
        ukey = unique_key(customer_id, start, metric)
        for i in range(0, len(values), 10_000):
            redis.sadd(ukey, *values[i : i + 10_000])
        redis.expireat(ukey, expire)
    fields = state_to_fields(state)
    flat = [x for pair in fields.items() for x in pair]
    redis.register_script(_LOAD)(keys=[key], args=[version, expire, len(fields), *flat])
    settle([key])


def forget_segment(customer_id: str, start: datetime, unique_metrics: Sequence[str]) -> None:
    """Drop a segment's counters (the next read rebuilds them): used by reconciliation."""
    keys = [segment_key(customer_id, start)]
    keys += [unique_key(customer_id, start, m) for m in unique_metrics]
    get_redis().delete(*keys)
