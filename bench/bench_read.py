"""Read latency of a customer's current usage and estimated bill: the Redis counters priced in
process (`services.usage.current_usage`) against the SQL aggregate over the ledger that a
design without counters runs per request, in the same run, for one customer with N events in
its current billing period.

    .venv/bin/python -m bench.bench_read [--events N] [--calls 2000] [--sql-calls 30]

The events go through the ingest functions themselves (`services.ingest.ingest_batch` and
`storage.usage.counters.apply_deltas`, 5,000 per transaction), so ledger, rollups and counters are
consistent the way workers leave them. Both reads must give the same answer (checked), and the
cold read (after FLUSHDB: the counters are rebuilt from the rollups) is timed once.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
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
        f"{figures['max']:>9.3f}"
    )
    return figures


def agrees(report: Any, quote: Any) -> bool:
    """The counters' report and the ledger's quote give the same usage and the same total."""
    return bool(
        report.quote.total == quote.total
        and all(quote.usage[key] == metric.used for key, metric in report.metrics.items())
    )


def measure_reads(customer: str, calls: int, sql_calls: int) -> bool:
    """Time both reads, then the cold one; True when every answer agrees with the ledger."""
    from services.usage import current_usage
    from storage.redis_client import get_redis

    events, quote = usage_from_ledger(customer)
    same = agrees(current_usage(customer), quote)
    print(
        f"answer: {events:,} events in the ledger; estimated total {quote.total} "
        f"{quote.currency}; counters agree with the ledger: {'yes' if same else 'NO'}"
    )
    print(f"{'read (ms)':52} {'calls':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    time_calls(50, lambda: current_usage(customer))  # warm: connections, caches
    fast = show(
        "current_usage: Redis counters + pricing",
        time_calls(calls, lambda: current_usage(customer)),
    )
    usage_from_ledger(customer)
    slow = show(
        "SQL aggregate over the ledger + pricing",
        time_calls(sql_calls, lambda: usage_from_ledger(customer)),
    )
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
        f"ratio: SQL / counters = {slow['p50'] / fast['p50']:,.0f}x at p50, "
        f"{slow['p99'] / fast['p99']:,.0f}x at p99 (goal: counters p99 <= 2 ms, >= 50x); "
        f"cold read {cold['p50']:.1f} ms, rebuilt counters agree with the ledger: "
        f"{'yes' if same_after_rebuild else 'NO'}"
    )
    return same and same_after_rebuild


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the customer")
    parser.add_argument("--calls", type=int, default=2000, help="timed current_usage calls")
    parser.add_argument("--sql-calls", type=int, default=30, help="timed SQL aggregate calls")
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
        if not measure_reads(customer, args.calls, args.sql_calls):
            raise SystemExit(1)
    finally:
        from storage import db
        from storage.redis_client import reset_redis

        db.close_pool()
        reset_redis()
        servers.release()


if __name__ == "__main__":
    main()
