"""Real-time usage counters in Redis: one hash per customer × billing segment, a versioned copy
of the segment's rollup rows.

Each ingest transaction bumps the segment's `version` in PostgreSQL and, after its batch
statement, reads the segment's rollups back in the same transaction: the merged state at that
version. After the commit the worker writes that copy (`apply_deltas`); the hash records the
version it holds (`_v`) and the write is a compare-version-and-set: it happens only if the
copy is newer than what Redis holds. So nothing is merged here (the merge rule lives once, in
SQL: `storage.usage.rollups.MERGE_ON_CONFLICT`), and

- a redelivered batch, a reload after Redis lost its data and a normal batch are the same
  operation: write the newest copy (a redelivery reads its copy again from the rollups);
- two workers finishing out of order leave the newer copy in place (the older one is skipped);
- a worker killed after its PostgreSQL commit leaves nothing to repair: the next batch of the
  segment carries every earlier change in its copy.

Distinct values for `unique_count` live in a set per metric (SADD is idempotent by nature; a set
union needs no merge rule). A batch adds its own values; when its copy does not follow the
version Redis holds (a gap: an earlier batch's values may be missing), the segment's values are
first loaded from the rollups. All keys of a customer share the `{customer}` hash tag so a Redis
Cluster keeps them on one slot.
"""

from __future__ import annotations

import hashlib
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
#: layout are then simply not found, and rebuilt from the rollups on first use. (3: a copy of
#: the rollups; layout 2 could hold staged deltas that only its own code could fold.)
LAYOUT = 3


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
class CounterCopy:
    """A customer × segment's merged state at `version`, read back from the rollups in the
    transaction that made it, and the distinct values that transaction added."""

    customer_id: str
    start: datetime
    end: datetime
    version: int
    state: SegmentState
    uniques: dict[str, list[str]]


@dataclass(frozen=True)
class SegmentCounters:
    version: int
    state: SegmentState
    unique_counts: dict[str, int]


def _expire_at(end: datetime) -> int:
    return int(end.timestamp()) + RETENTION


def apply_deltas(copies: Sequence[CounterCopy]) -> None:
    """Write each segment's copy unless Redis holds this version or a newer one. Safe to call
    any number of times, in any order. One round trip, plus two for the segments whose copy
    does not follow the version in Redis (their distinct values are loaded first)."""
    if not copies:
        return
    pipe = get_redis().pipeline(transaction=False)
    for copy in copies:  # distinct values first: a reader never sees a copy without its values
        _add_uniques(pipe, copy.customer_id, copy.start, copy.end, copy.uniques)
    for copy in copies:
        _put(pipe, copy, gap_check=True)
    replies = pipe.execute()
    gapped = [c for c, reply in zip(copies, replies[-len(copies) :], strict=True) if reply == -1]
    if gapped:
        stored = rollups.read_uniques([(c.customer_id, c.start) for c in gapped])
        pipe = get_redis().pipeline(transaction=False)
        for copy in gapped:
            uniques = stored[(copy.customer_id, copy.start)]
            _add_uniques(pipe, copy.customer_id, copy.start, copy.end, uniques)
            _put(pipe, copy, gap_check=False)
        pipe.execute()


def _add_uniques(
    pipe: Any, customer_id: str, start: datetime, end: datetime, uniques: dict[str, list[str]]
) -> None:
    for metric, values in uniques.items():
        if values:
            ukey = unique_key(customer_id, start, metric)
            for i in range(0, len(values), 10_000):
                pipe.sadd(ukey, *values[i : i + 10_000])
            pipe.expireat(ukey, _expire_at(end))


def _put(pipe: Any, copy: CounterCopy, *, gap_check: bool) -> None:
    fields = fields_of.state_to_fields(copy.state)
    flat = [x for pair in fields.items() for x in pair]
    args = [copy.version, _expire_at(copy.end), "1" if gap_check else "0", len(fields), *flat]
    scripts_for(get_redis()).put(
        keys=[segment_key(copy.customer_id, copy.start)], args=args, client=pipe
    )


def reload_segments(segments: Iterable[tuple[str, datetime, datetime]]) -> None:
    """Bring these segments' counters up to their rollups (a no-op where Redis is as new).
    Used when a batch is redelivered: its first delivery may have died before its Redis write."""
    for customer_id, start, end in segments:
        snap = rollups.snapshot(customer_id, start)
        load_segment(customer_id, start, end, snap.version, snap.state, snap.uniques)


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def read_segment(
    customer_id: str, start: datetime, unique_metrics: Sequence[str]
) -> SegmentCounters | None:
    """The counters of a segment, or None when they must be rebuilt (Redis has no copy)."""
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
    if "_v" not in fields:
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
        usable = "_v" in fields
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
        found.append(_segment_counters(fields, unique_metrics, cards) if "_v" in fields else None)
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
    """Write a PostgreSQL snapshot into Redis, with all its distinct values (unless Redis
    already holds that version or a newer one)."""
    pipe = get_redis().pipeline(transaction=False)
    _add_uniques(pipe, customer_id, start, end, uniques)
    _put(pipe, CounterCopy(customer_id, start, end, version, state, {}), gap_check=False)
    pipe.execute()


def forget_segment(customer_id: str, start: datetime, unique_metrics: Sequence[str]) -> None:
    """Drop a segment's counters (the next read rebuilds them): used by reconciliation."""
    keys = [segment_key(customer_id, start)]
    keys += [unique_key(customer_id, start, m) for m in unique_metrics]
    get_redis().delete(*keys)
