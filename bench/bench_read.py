"""Read latency of a customer's current usage and estimated bill: the Redis counters priced in
process (`services.usage.current_usage`) against two baselines in the same run, for one
customer with N events in its current billing period:

- the fair one: the same `current_usage`, its segment state read from the PostgreSQL rollups
  (one round trip: the segment's version, its rollup rows and its distinct-value counts)
  instead of Redis, single-threaded and under R concurrent reader processes (as Redis is);
- the SQL aggregate over the raw ledger that a design without rollups runs per request.

    .venv/bin/python -m bench.bench_read [--events N] [--calls 2000] [--sql-calls 30]
        [--readers 8] [--concurrent-calls 500]

The events go through the ingest functions themselves (`services.ingest.ingest_batch` and
`storage.usage.counters.apply_deltas`, 5,000 per transaction), so ledger, rollups and counters are
consistent the way workers leave them. Both reads must give the same answer (checked), and the
cold read (after FLUSHDB: the counters are rebuilt from the rollups) is timed once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench import common

LOAD_BATCH = 5000
METRICS = ("api_calls", "storage_gb", "bandwidth_gb")
METRIC_WEIGHTS = (8, 1, 1)

_AGGREGATE = """
SELECT metric, sum(quantity), count(*), max(quantity) FROM usage_events
WHERE customer_id = %s AND timestamp >= %s AND timestamp < %s GROUP BY metric
"""


def load_events(customer_id: str, events: int, start: datetime, end: datetime) -> None:
    """`events` events spread over [start, end), through the ingest functions."""
    from services.ingest import ingest_batch
    from storage.ledger.batches import mark_counters_applied
    from storage.usage.counters import apply_deltas

    rng = random.Random(7)
    span_us = int((end - start).total_seconds() * 1_000_000)
    metric_of = [m for m, w in zip(METRICS, METRIC_WEIGHTS, strict=True) for _ in range(w)]
    started = time.perf_counter()
    for first in range(0, events, LOAD_BATCH):
        batch: list[dict[str, Any]] = []
        for i in range(first, min(first + LOAD_BATCH, events)):
            metric = metric_of[rng.randrange(len(metric_of))]
            at = start + timedelta(microseconds=rng.randrange(span_us))
            batch.append(
                {
                    "event_id": f"load-{i}",
                    "customer_id": customer_id,
                    "metric": metric,
                    "quantity": "1" if metric == "api_calls" else str(rng.randint(1, 500)),
                    "timestamp": at.isoformat(),
                    "properties": {},
                }
            )
        outcome = ingest_batch(f"load-{first}", batch)
        if outcome.accepted != len(batch):
            raise RuntimeError(f"load: batch {first} accepted {outcome.accepted}: {outcome}")
        apply_deltas(outcome.deltas)
        mark_counters_applied(outcome.batch_id)
        done = first + len(batch)
        if done % 100_000 == 0 or done == events:
            rate = done / (time.perf_counter() - started)
            print(f"  ... {done:,} events loaded ({rate:,.0f} events/s)", flush=True)


def usage_from_ledger(customer_id: str) -> tuple[int, Any]:
    """What a design without counters does per request: aggregate the ledger over the period,
    then price it. Returns the number of events read and the quote."""
    from pricing.charges.base import MetricUsage
    from pricing.rating import rate
    from storage import db
    from storage.catalog.cache import catalog

    context = catalog.customers({customer_id})[customer_id]
    segment = catalog.segment(context, datetime.now(UTC))
    assert segment is not None
    with db.connection() as conn:
        rows = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(_AGGREGATE, (customer_id, segment.start, segment.end))
        }
    usage: dict[str, MetricUsage] = {}
    for key, metric in segment.plan.metrics.items():
        if metric.field is not None or metric.filter:
            raise NotImplementedError(f"{key}: fields and filters are not in this benchmark")
        total, count, peak = rows.get(metric.event or key, (Decimal(0), 0, None))
        quantity = {"sum": total, "count": Decimal(count), "max": peak or Decimal(0)}
        usage[key] = MetricUsage(quantity[metric.aggregation])
    return sum(r[1] for r in rows.values()), rate(segment.plan, usage)


_ROLLUP_READ = """
SELECT p.version, r.metric, r.event_count, r.total, r.maximum, r.latest_at, r.latest_event_id,
       r.latest_value, r.weighted_v, r.weighted_vt, r.charge_state,
       (SELECT count(*) FROM usage_rollup_uniques u WHERE u.customer_id = r.customer_id
        AND u.period_start = r.period_start AND u.metric = r.metric)
FROM usage_periods p LEFT JOIN usage_rollups r
  ON r.customer_id = p.customer_id AND r.period_start = p.period_start
WHERE p.customer_id = %s AND p.period_start = %s
"""


def rollup_counters(customer_id: str, segment: Any) -> tuple[int, Any, dict[str, int]]:
    """`services.usage.segment_counters` from the PostgreSQL rollups: one query, no Redis."""
    from pricing.metering import SegmentState
    from storage import db
    from storage.usage.rollups import _state_from_row

    state = SegmentState()
    uniques: dict[str, int] = {}
    version = 0
    with db.connection() as conn:
        for row in conn.execute(_ROLLUP_READ, (customer_id, segment.start)):
            version = int(row[0])
            if row[1] is None:
                continue
            state.metrics[row[1]] = _state_from_row(row[2:10])
            for charge_key, charge in (row[10] or {}).items():
                state.charges[charge_key] = state.charge_from_json(charge)
            uniques[row[1]] = int(row[11])
    return version, state, uniques


@contextmanager
def from_rollups() -> Iterator[None]:
    """`current_usage` answering from the rollups instead of the counters, meanwhile."""
    import services.usage

    original = services.usage.segment_counters
    services.usage.segment_counters = rollup_counters
    try:
        yield
    finally:
        services.usage.segment_counters = original


def segment_version(customer_id: str, segment: Any, source: str) -> int:
    """The segment's version alone (what a memoised read checks first): one HGET from the
    counters, or one indexed row from `usage_periods`."""
    if source == "redis":
        from storage.redis_client import get_redis
        from storage.usage.counters import segment_key

        raw = get_redis().hget(segment_key(customer_id, segment.start), "_v")
        return int(raw) if raw is not None else -1
    from storage import db

    with db.connection() as conn:
        row = conn.execute(_VERSION, (customer_id, segment.start)).fetchone()
    return int(row[0]) if row else -1


_VERSION = "SELECT version FROM usage_periods WHERE customer_id = %s AND period_start = %s"


def memo_reader(customer: str, source: str, *, hit: bool) -> Callable[[], Any]:
    """`current_usage` memoised per (customer, segment, version) in the process, the same memo
    for both sources: read the version, answer from the memo when it holds that version (with
    `hit` False the memo is emptied first, so every call pays the version read and the read)."""
    from services.usage import current_usage
    from storage.catalog.cache import catalog

    memo: dict[tuple[str, datetime, int], Any] = {}

    def read() -> Any:
        context = catalog.customers({customer})[customer]
        segment = catalog.segment(context, datetime.now(UTC))
        assert segment is not None
        key = (customer, segment.start, segment_version(customer, segment, source))
        if not hit:
            memo.clear()
        found = memo.get(key)
        if found is None:
            if source == "redis":
                found = current_usage(customer)
            else:
                with from_rollups():
                    found = current_usage(customer)
            memo[key] = found
        return found

    return read


def profile_read(customer: str, calls: int) -> None:
    """Where one hot read's time goes: each step timed on its own, `calls` times (medians)."""
    from services.usage import _unique_metrics, current_usage, segment_report
    from storage.catalog.cache import catalog
    from storage.redis_client import get_redis
    from storage.usage import counter_fields as fields_of
    from storage.usage import counters

    context = catalog.customers({customer})[customer]
    segment = catalog.segment(context, datetime.now(UTC))
    assert segment is not None
    key = counters.segment_key(customer, segment.start)
    u = _unique_metrics(segment)
    raw: dict[bytes, bytes] = get_redis().hgetall(key)  # type: ignore[assignment]
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    live = counters.read_segment(customer, segment.start, u)
    assert live is not None
    state = (live.version, live.state, live.unique_counts)
    at = datetime.now(UTC)

    def report(context: Any, segment: Any, at: datetime) -> Any:
        return segment_report(context, segment, at, state)

    def round_trip() -> Any:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hgetall(key)
        return pipe.execute()

    start = segment.start
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("whole current_usage (Redis)", lambda: current_usage(customer)),
        ("  catalog: customer and segment (in process)", lambda: catalog.segment(context, at)),
        ("  Redis round trip (pipelined HGETALL)", round_trip),
        ("  decode the hash into the segment state", lambda: fields_of.state_from_fields(fields)),
        ("  read_segment (round trip + decode)", lambda: counters.read_segment(customer, start, u)),
        ("  pricing: segment_usage, rate, compose, report", lambda: report(context, segment, at)),
        ("whole current_usage (rollups)", lambda: _with_rollups(customer)),
        (
            "  rollup_counters (PostgreSQL query + decode)",
            lambda: rollup_counters(customer, segment),
        ),
    ]
    print(f"{'one read, step by step (ms, medians of ' + str(calls) + ')':52} {'p50':>9}")
    for label, call in steps:
        time_calls(20, call)
        samples = sorted(time_calls(calls, call))
        print(f"{label:52} {samples[len(samples) // 2] * 1000:>9.3f}")


def _with_rollups(customer: str) -> Any:
    from services.usage import current_usage

    with from_rollups():
        return current_usage(customer)


def time_calls(count: int, call: Callable[[], Any]) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def show(label: str, samples: list[float]) -> dict[str, float]:
    figures = common.latency_summary(samples)
    print(
        f"{label:52} {len(samples):>6} {figures['p50']:>9.3f} {figures['p99']:>9.3f} "
        f"{figures['max']:>9.3f}   load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return figures


def agrees(report: Any, quote: Any) -> bool:
    """The counters' report and the ledger's quote give the same usage and the same total."""
    return bool(
        report.quote.total == quote.total
        and all(quote.usage[key] == metric.used for key, metric in report.metrics.items())
    )


def measure_reads(customer: str, args: argparse.Namespace) -> bool:
    """Time the reads, then the cold one; True when every answer agrees with the ledger."""
    from services.usage import current_usage
    from storage.redis_client import get_redis

    events, quote = usage_from_ledger(customer)
    same = agrees(current_usage(customer), quote)
    with from_rollups():
        same = same and agrees(current_usage(customer), quote)
    print(
        f"answer: {events:,} events in the ledger; estimated total {quote.total} "
        f"{quote.currency}; counters and rollups agree with the ledger: {'yes' if same else 'NO'}"
    )
    print(f"{'read (ms)':52} {'calls':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    time_calls(50, lambda: current_usage(customer))  # warm: connections, caches
    fast = show(
        "current_usage: Redis counters + pricing",
        time_calls(args.calls, lambda: current_usage(customer)),
    )
    with from_rollups():
        time_calls(50, lambda: current_usage(customer))
        fair = show(
            "current_usage from the PostgreSQL rollups + pricing",
            time_calls(args.calls, lambda: current_usage(customer)),
        )
    usage_from_ledger(customer)
    slow = show(
        "SQL aggregate over the ledger + pricing",
        time_calls(args.sql_calls, lambda: usage_from_ledger(customer)),
    )
    busy_fast = show(
        f"  the counters, {args.readers} concurrent reader processes",
        concurrent_reads(customer, "redis", args.readers, args.concurrent_calls),
    )
    busy_fair = show(
        f"  the rollups, {args.readers} concurrent reader processes",
        concurrent_reads(customer, "rollups", args.readers, args.concurrent_calls),
    )
    measure_memo(customer, args)
    get_redis().flushdb()
    started = time.perf_counter()
    rebuilt = current_usage(customer)
    cold = show("cold current_usage after FLUSHDB (rebuild)", [time.perf_counter() - started])
    show(
        "current_usage after the rebuild (hot again)",
        time_calls(20, lambda: current_usage(customer)),
    )
    same_after_rebuild = agrees(rebuilt, quote)
    print(
        f"ratio: rollups / counters = {fair['p50'] / fast['p50']:.2f}x at p50, "
        f"{fair['p99'] / fast['p99']:.2f}x at p99 single-threaded; "
        f"{busy_fair['p50'] / busy_fast['p50']:.2f}x at p50, "
        f"{busy_fair['p99'] / busy_fast['p99']:.2f}x at p99 under {args.readers} readers "
        f"(the counters earn their keep at >= 3x p99 under concurrency: "
        f"{'yes' if busy_fair['p99'] >= 3 * busy_fast['p99'] else 'NO'})"
    )
    print(
        f"ratio: ledger SQL / counters = {slow['p50'] / fast['p50']:,.0f}x at p50, "
        f"{slow['p99'] / fast['p99']:,.0f}x at p99; "
        f"cold read {cold['p50']:.1f} ms, rebuilt counters agree with the ledger: "
        f"{'yes' if same_after_rebuild else 'NO'}"
    )
    return same and same_after_rebuild


def measure_memo(customer: str, args: argparse.Namespace) -> None:
    """Both sources with the same memo per (customer, segment, version): its hits and its
    misses, single-threaded and under `--readers` processes."""
    figures: dict[str, dict[str, float]] = {}
    for source in ("redis", "rollups"):
        for hit in (True, False):
            read = memo_reader(customer, source, hit=hit)
            time_calls(50, read)
            name = f"{source}-memo-{'hit' if hit else 'miss'}"
            figures[name] = show(
                f"memo {'hit' if hit else 'miss'}, {source}", time_calls(args.calls, read)
            )
    for name in figures.copy():
        figures[f"busy-{name}"] = show(
            f"  memo {name.split('-')[-1]}, {name.split('-')[0]}, {args.readers} readers",
            concurrent_reads(customer, name, args.readers, args.concurrent_calls),
        )
    for kind in ("hit", "miss"):
        redis, pg = figures[f"busy-redis-memo-{kind}"], figures[f"busy-rollups-memo-{kind}"]
        print(
            f"ratio with the memo ({kind}s): rollups / counters = "
            f"{pg['p50'] / redis['p50']:.2f}x at p50, {pg['p99'] / redis['p99']:.2f}x at p99 "
            f"under {args.readers} readers"
        )  # fmt: skip


def concurrent_reads(customer: str, source: str, readers: int, calls: int) -> list[float]:
    """Latencies of `calls` reads in each of `readers` processes started together."""
    context = multiprocessing.get_context("spawn")  # fresh pools and clients in each
    start_at = time.time() + 3 + readers * 0.5  # after every process has imported and warmed
    with ProcessPoolExecutor(readers, mp_context=context) as pool:
        futures = [pool.submit(_reader, customer, source, calls, start_at) for _ in range(readers)]
        return [sample for future in futures for sample in future.result()]


def _reader(customer: str, source: str, calls: int, start_at: float) -> list[float]:
    """One reader process: warm up, wait for the common start, time `calls` reads."""
    from services.usage import current_usage

    def plain() -> Any:
        if source == "rollups":
            with from_rollups():
                return current_usage(customer)
        return current_usage(customer)

    read = plain
    if "-memo-" in source:
        read = memo_reader(customer, source.split("-")[0], hit=source.endswith("-hit"))
    time_calls(20, read)
    time.sleep(max(start_at - time.time(), 0))
    return time_calls(calls, read)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the customer")
    parser.add_argument("--calls", type=int, default=2000, help="timed current_usage calls")
    parser.add_argument("--sql-calls", type=int, default=30, help="timed SQL aggregate calls")
    parser.add_argument("--readers", type=int, default=8, help="concurrent reader processes")
    parser.add_argument(
        "--concurrent-calls", type=int, default=500, help="timed reads per concurrent reader"
    )
    parser.add_argument(
        "--profile-calls", type=int, default=500, help="timed calls of each step of one read"
    )
    args = parser.parse_args(argv)

    servers = common.use_bench_servers()
    try:
        from services.usage import current_usage

        print(f"machine: {common.machine_line()}")
        (customer,) = common.setup_api_customers(1)
        segment = current_usage(customer).segment
        now = datetime.now(UTC)
        print(
            f"loading {args.events:,} events of {customer} over {segment.start:%Y-%m-%d} .. "
            f"{now:%Y-%m-%d %H:%M} through ingest_batch + apply_deltas ({LOAD_BATCH:,} a batch)"
        )
        load_events(customer, args.events, segment.start, now - timedelta(seconds=1))
        profile_read(customer, args.profile_calls)
        if not measure_reads(customer, args):
            raise SystemExit(1)
    finally:
        from storage import db
        from storage.redis_client import reset_redis

        db.close_pool()
        reset_redis()
        servers.release()


if __name__ == "__main__":
    main()
