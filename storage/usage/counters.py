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

from pricing.metering import SegmentState
from storage.redis_client import get_redis
from storage.usage import counter_fields as fields_of
from storage.usage import rollups
from storage.usage.scripts import scripts_for

RETENTION = 40 * 86400  # counters outlive their segment by the late-event window


def customer_tag(customer_id: str) -> str:
    """The Redis Cluster hash tag of every key of a customer."""
    if "{" in customer_id or "}" in customer_id:
        return hashlib.sha1(customer_id.encode(), usedforsecurity=False).hexdigest()
    return customer_id


_tag = customer_tag


#: Bumped whenever the hash layout changes (`storage.usage.counter_fields`): hashes of an older
#: layout are then simply not found, and rebuilt from the rollups on first use.
LAYOUT = 2


def segment_key(customer_id: str, start: datetime) -> str:
    return f"ml:{{{_tag(customer_id)}}}:s{LAYOUT}:{int(start.timestamp())}"


def unique_key(customer_id: str, start: datetime, metric: str) -> str:
    return f"ml:{{{_tag(customer_id)}}}:u:{int(start.timestamp())}:{metric}"


#: How long a batch's "counted" markers live: longer than a producer waits for them
#: (`tasks.recorder.PENDING_WINDOW`, counted from the send, which comes before the marker),
#: with a minute's slack, and no longer: Redis holds one marker per customer × batch for this
#: long (a 10-minute soak at 3,339 events/s over 1,000 customers held ~1.4M of them at 900 s).
MARKER_TTL = 360


def batch_marker_key(customer_id: str, batch_id: str) -> str:
    """Set once a batch's events of this customer are in its counters (see `mark_counted`)."""
    return f"ml:{{{_tag(customer_id)}}}:b:{batch_id}"


def mark_counted(batch_id: str, customer_ids: Iterable[str]) -> None:
    """Tell producers that this batch's events of these customers are in the counters: their
    `check_limit` stops counting them as pending. One pipelined round trip per batch."""
    pipe = get_redis().pipeline(transaction=False)
    for customer_id in set(customer_ids):
        pipe.set(batch_marker_key(customer_id, batch_id), b"1", ex=MARKER_TTL)
    pipe.execute()


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

    Fast path: one script per segment merges the delta inside Redis (integer fields) when the
    hash is at the version just before the delta's. Anything else (a gap, staged deltas, a
    metric kept as JSON, a hash Redis lost) takes the general path: stage, then fold.
    """
    if not deltas:
        return
    redis = get_redis()
    fast = scripts_for(redis).fast
    pipe = redis.pipeline(transaction=False)
    tried: list[CounterDelta] = []
    general: list[CounterDelta] = []
    for delta in deltas:  # distinct values first: SADD is idempotent, order is not needed
        for metric, values in delta.uniques.items():
            if values:
                ukey = unique_key(delta.customer_id, delta.start, metric)
                pipe.sadd(ukey, *values)
                pipe.expireat(ukey, _expire_at(delta.end))
    for delta in deltas:
        args = _fast_args(delta)
        if args is None:
            general.append(delta)
            continue
        fast(keys=[segment_key(delta.customer_id, delta.start)], args=args, client=pipe)
        tried.append(delta)
    replies = pipe.execute()
    outcomes = replies[len(replies) - len(tried) :] if tried else []
    general += [delta for delta, done in zip(tried, outcomes, strict=True) if not done]
    if general:
        _stage_and_settle(general)


def _fast_args(delta: CounterDelta) -> list[Any] | None:
    """The fast script's arguments, or None when the delta needs the general path."""
    if delta.state.charges:
        return None
    args: list[Any] = [delta.version, _expire_at(delta.end), len(delta.state.metrics)]
    for name, state in delta.state.metrics.items():
        fields = fields_of.integer_fields(name, state)
        if fields is None:
            return None
        args += [
            name,
            fields[f"n:{name}"],
            fields[f"s:{name}"],
            fields.get(f"x:{name}", ""),
            fields.get(f"t:{name}", ""),
            fields.get(f"l:{name}", ""),
        ]
    return args


def _stage_and_settle(deltas: Sequence[CounterDelta]) -> None:
    redis = get_redis()
    stage = scripts_for(redis).stage
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
    cas = scripts_for(redis).cas
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
    """The compare-and-set that folds contiguous staged deltas, or None if nothing to do."""
    # Version 1 is the segment's first batch: its base is the empty state at version 0.
    current = int(fields.get("_v", 0))
    pending = {int(k[5:]): k for k in fields if k.startswith("pend:")}
    stale = [name for version, name in pending.items() if version <= current]
    version = current
    state = fields_of.state_from_fields(fields)
    metrics: set[str] = set()
    charges: set[str] = set()
    while version + 1 in pending:
        version += 1
        delta = SegmentState.from_json(json.loads(fields[pending[version]])["state"])
        state = state.merge(delta)
        metrics.update(delta.metrics)
        charges.update(delta.charges)
    if version == current and not stale:
        return None
    new_fields: dict[str, str] = {}
    delete: list[str] = []
    for name in metrics:
        written = fields_of.metric_fields(name, state.metrics[name])
        new_fields.update(written)
        delete += [f for f in fields_of.stale_fields(name, written) if f in fields]
    for key in charges:
        charge, charge_state = state.charges[key]
        new_fields[f"c:{key}"] = json.dumps(SegmentState.charge_json(charge, charge_state))
    folded = [pending[v] for v in range(current + 1, version + 1)]
    return fields.get("_v", ""), version, new_fields, delete + stale + folded


def read_segment(
    customer_id: str, start: datetime, unique_metrics: Sequence[str]
) -> SegmentCounters | None:
    """The counters of a segment, or None when they must be rebuilt (missing, or a delta
    staged that cannot be folded yet: a gap in the versions)."""
    return read_segment_and(customer_id, start, unique_metrics)[0]


def read_segment_and(
    customer_id: str, start: datetime, unique_metrics: Sequence[str], also: Sequence[str] = ()
) -> tuple[SegmentCounters | None, list[bytes | None]]:
    """`read_segment`, plus the values of the string keys `also` read in the same round trip
    (a limit check reads its cache revision and the recorder's batch markers with them)."""
    redis = get_redis()
    pipe = redis.pipeline(transaction=False)
    if also:  # first: a marker written before the hash is read is reflected in the hash
        pipe.mget(list(also))
    pipe.hgetall(segment_key(customer_id, start))
    for metric in unique_metrics:
        pipe.scard(unique_key(customer_id, start, metric))
    replies = pipe.execute()
    extra: list[bytes | None] = list(replies.pop(0)) if also else []
    raw, *cards = replies
    fields = _decode(raw)
    if "_v" not in fields or int(fields.get("_p", 0)) > 0:
        return None, extra
    return _segment_counters(fields, unique_metrics, cards), extra


def read_many_segments_and(
    reads: Sequence[tuple[str, datetime, Sequence[str], Sequence[str]]],
) -> list[tuple[SegmentCounters | None, list[bytes | None]]]:
    """`read_segment_and` of many (customer, segment start, unique metrics, string keys) in one
    round trip; each customer's keys are read before its counters, as there."""
    pipe = get_redis().pipeline(transaction=False)
    for customer_id, start, unique_metrics, also in reads:
        pipe.mget(list(also))
        pipe.hgetall(segment_key(customer_id, start))
        for metric in unique_metrics:
            pipe.scard(unique_key(customer_id, start, metric))
    replies = iter(pipe.execute() if reads else [])
    found: list[tuple[SegmentCounters | None, list[bytes | None]]] = []
    for _, _, unique_metrics, _ in reads:
        extra, fields = list(next(replies)), _decode(next(replies))
        cards = [next(replies) for _ in unique_metrics]
        usable = "_v" in fields and int(fields.get("_p", 0)) == 0
        found.append((_segment_counters(fields, unique_metrics, cards) if usable else None, extra))
    return found


def read_segments(
    segments: Sequence[tuple[str, datetime, Sequence[str]]],
) -> list[SegmentCounters | None]:
    """`read_segment` of many (customer, segment start, unique metrics) in one round trip."""
    if not segments:
        return []
    pipe = get_redis().pipeline(transaction=False)
    for customer_id, start, unique_metrics in segments:
        pipe.hgetall(segment_key(customer_id, start))
        for metric in unique_metrics:
            pipe.scard(unique_key(customer_id, start, metric))
    replies = iter(pipe.execute())
    found: list[SegmentCounters | None] = []
    for _, _, unique_metrics in segments:
        fields = _decode(next(replies))
        cards = [next(replies) for _ in unique_metrics]
        usable = "_v" in fields and int(fields.get("_p", 0)) == 0
        found.append(_segment_counters(fields, unique_metrics, cards) if usable else None)
    return found


def _segment_counters(
    fields: dict[str, str], unique_metrics: Sequence[str], cards: Sequence[int]
) -> SegmentCounters:
    return SegmentCounters(
        version=int(fields["_v"]),
        state=fields_of.state_from_fields(fields),
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
    fields = fields_of.state_to_fields(state)
    flat = [x for pair in fields.items() for x in pair]
    scripts_for(redis).load(keys=[key], args=[version, expire, len(fields), *flat])
    settle([key])


def stored_fields(customer_id: str, start: datetime) -> set[str]:
    """The names of the fields in a segment's hash, as they are (empty when there is none)."""
    names = get_redis().hkeys(segment_key(customer_id, start))
    return {name.decode() if isinstance(name, bytes) else name for name in names}


def forget_segment(customer_id: str, start: datetime, unique_metrics: Sequence[str]) -> None:
    """Drop a segment's counters (the next read rebuilds them): used by reconciliation."""
    keys = [segment_key(customer_id, start)]
    keys += [unique_key(customer_id, start, m) for m in unique_metrics]
    get_redis().delete(*keys)
