"""`check_limit` latency in a process that is also recording, against the SQL rollup read.

    .venv/bin/python -m bench.bench_check_limit [--events 200000] [--calls 5000] [--rate 2000]

One customer of the example API plan, with a hard limit, a throttle share and a spend cap set
as overrides (so every check also prices the request: the slowest path), and `--events` events
already ingested. Then, with one ingest worker running, a thread of this process records
`--rate` events/s for that customer through `record_usage` (the default recorder, flushing
every 50 ms) while the main thread calls `tasks.check_limit` `--calls` times, 1 ms apart:
each call reads the counters, the overrides revision and the recorder's batch markers in one
Redis round trip and counts the events the recorder holds. The baseline, in the same run, is
what a limit check without live counters would do per request: read the customer's rollups
from PostgreSQL (`storage.usage.rollups.snapshot`) and price them; the yardstick, while the
recorder still runs, is the check's Redis round trip alone (the floor under its latency).
At the end the recorder is
flushed, the worker drains the queue, and check_limit's `used` must equal the ledger's count.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import common
from bench.bench_read import load_events, show, time_calls


def rollup_check(customer_id: str) -> Any:
    """The baseline: the limit check's usage from the PostgreSQL rollups, priced."""
    from pricing.metering import segment_usage
    from pricing.rating import rate
    from storage.catalog.cache import catalog
    from storage.usage import rollups

    context = catalog.customers({customer_id})[customer_id]
    segment = catalog.segment(context, datetime.now(UTC))
    assert segment is not None
    snap = rollups.snapshot(customer_id, segment.start)
    counts = {k: len(v) for k, v in snap.uniques.items()}
    usage, results = segment_usage(segment.plan, snap.state, counts, segment)
    return usage["api_calls"].quantity, rate(segment.plan, usage, charge_results=results).total


class SteadyRecorder(threading.Thread):
    """Records `rate` events/s for one customer until stopped (in ticks of 10 ms)."""

    def __init__(self, customer_id: str, rate: int) -> None:
        super().__init__(name="bench-recorder", daemon=True)
        self.customer_id = customer_id
        self.rate = rate
        self.recorded = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from tasks import record_usage

        started = time.perf_counter()
        while not self.stop.is_set():
            due = int((time.perf_counter() - started) * self.rate)
            while self.recorded < due:
                record_usage(self.customer_id, "api_calls")
                self.recorded += 1
            self.stop.wait(0.01)


class Bounds:
    """Checks each call's `used` against what the recorder thread had recorded around it:
    at least everything recorded before the call (its own events are never missed), at most
    everything recorded after it plus the one being recorded (nothing counted twice)."""

    def __init__(self, producer: SteadyRecorder, ingested: int) -> None:
        self.producer = producer
        self.ingested = ingested
        self.missed = 0  # calls that counted less than this process had recorded
        self.doubled = 0  # calls that counted more than it had recorded

    @property
    def violations(self) -> int:
        return self.missed + self.doubled

    def check(self, customer: str) -> None:
        from tasks import check_limit

        before = self.producer.recorded
        used = check_limit(customer, "api_calls").used
        after = self.producer.recorded
        if used < self.ingested + before:
            self.missed += 1
        elif used > self.ingested + after + 1:
            self.doubled += 1


def counters_read(customer_id: str) -> Any:
    """The one Redis round trip a check makes (the segment's counters and the overrides
    revision, parsed), alone: the floor under check_limit's latency."""
    from services.usage import current_usage
    from storage.catalog import limits as override_store
    from storage.usage import counters

    start = current_usage(customer_id).segment.start
    revision = [override_store.revision_key(customer_id)]
    return lambda: counters.read_segment_and(customer_id, start, [], revision)


def spaced_calls(count: int, gap: float, call: Any) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread's) seconds of each call, `gap` seconds apart."""
    samples, cpu = [], []
    for _ in range(count):
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        samples.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        time.sleep(gap)
    return samples, cpu


def ledger_count(customer_id: str) -> int:
    from storage import db

    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM usage_events WHERE customer_id = %s AND metric = 'api_calls'",
            (customer_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def measure(customer: str, args: argparse.Namespace, logs: Path) -> bool:
    from storage.redis_client import get_redis
    from tasks import check_limit, flush_usage

    print(f"{'call (ms)':52} {'calls':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    time_calls(100, lambda: check_limit(customer, "api_calls"))  # warm caches, connections
    idle = show(
        "check_limit, idle process",
        time_calls(args.calls, lambda: check_limit(customer, "api_calls")),
    )
    get_redis().delete("dramatiq:__heartbeats__")
    with common.dramatiq_workers(
        "workers.app", processes=1, threads=2, queues=["ingest"], log_file=logs / "worker.log"
    ):
        common.wait_for_consumers(get_redis(), 1)
        producer = SteadyRecorder(customer, args.rate)
        producer.start()
        time.sleep(1.0)  # batches are flowing and being ingested
        bounds = Bounds(producer, args.events)
        busy_samples, busy_cpu = spaced_calls(args.calls, 0.001, lambda: bounds.check(customer))
        read = counters_read(customer)
        bare_samples, bare_cpu = spaced_calls(args.calls, 0.001, read)
        producer.stop.set()
        producer.join()
        busy = show(f"check_limit, recording {args.rate}/s meanwhile", busy_samples)
        show("  the same calls, CPU time of the calling thread", busy_cpu)
        show("yardstick: its Redis round trip alone, meanwhile", bare_samples)
        show("  the same reads, CPU time of the calling thread", bare_cpu)
        print(
            f"every busy call counted all this process had recorded, and nothing twice: "
            f"{'yes' if not bounds.violations else 'NO'} "
            f"({bounds.missed} calls counted less, {bounds.doubled} more)"
        )
        flush_usage()
        expected = args.events + producer.recorded
        deadline = time.monotonic() + 120
        while ledger_count(customer) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        final = check_limit(customer, "api_calls")
    base = show(
        "baseline: rollups from PostgreSQL + pricing",
        time_calls(min(args.calls, 500), lambda: rollup_check(customer)),
    )
    exact = final.used == expected and final.pending == 0 and not bounds.violations
    print(
        f"recorded {producer.recorded:,} events during the run; check_limit used "
        f"{int(final.used):,} (pending {final.pending}) = ledger {ledger_count(customer):,} "
        f"= expected {expected:,}: "
        f"{'yes' if exact else 'NO'}"
    )
    print(
        f"ratio: rollup read / check_limit = {base['p50'] / busy['p50']:.1f}x at p50, "
        f"{base['p99'] / busy['p99']:.1f}x at p99; busy / idle p99 = "
        f"{busy['p99'] / idle['p99']:.2f}; goal check_limit p99 <= 1 ms while recording: "
        f"{'met' if busy['p99'] <= 1.0 else 'NOT met'}"
    )
    return exact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events already ingested")
    parser.add_argument("--calls", type=int, default=5000, help="timed check_limit calls")
    parser.add_argument("--rate", type=int, default=2000, help="events/s recorded meanwhile")
    args = parser.parse_args(argv)

    common.BENCH_DATABASE = "meterline_bench_limits"  # runs beside the other benchmarks
    os.environ["METER_AUTO_MIGRATE"] = "1"  # a fresh database: migrate it on first use
    servers = common.use_bench_servers()
    logs = Path(f"/tmp/meterline-bench-check-limit-{int(time.time())}")
    logs.mkdir(parents=True, exist_ok=True)
    try:
        from services.overrides import set_overrides
        from services.usage import current_usage
        from storage.catalog.limits import OverrideChange

        print(f"machine: {common.machine_line()}; worker logs in {logs}")
        (customer,) = common.setup_api_customers(1)
        limits = OverrideChange(
            metric="api_calls", hard_limit=Decimal(10**9), throttle_at=Decimal("0.95")
        )
        set_overrides(customer, limits)
        set_overrides(customer, OverrideChange(spend_cap=Decimal(10**6)))
        segment = current_usage(customer).segment
        now = datetime.now(UTC)
        print(
            f"loading {args.events:,} events of {customer}; "
            "limits: hard 1e9, throttle 0.95, cap 1e6"
        )
        load_events(customer, args.events, segment.start, now - timedelta(seconds=1))
        # load_events spreads over three metrics; count what api_calls holds.
        args.events = ledger_count(customer)
        if not measure(customer, args, logs):
            raise SystemExit(1)
    finally:
        from storage import db
        from storage.redis_client import reset_redis
        from tasks import flush_usage

        flush_usage(timeout=10)
        db.close_pool()
        reset_redis()
        servers.release()


if __name__ == "__main__":
    main()
