"""What `record_usage()` costs a web request, against what a Dramatiq send per event would cost,
with the spool (METER_SPOOL_DIR, a temporary directory here) off and on in the same run.

Runs against a real Redis broker (REDIS_URL / BROKER_URL, or --url; the embedded Redis when
none is configured) under its own key namespace, so no running worker consumes the benchmark's
messages, and deletes every key it wrote. Each call is timed alone with perf_counter_ns; the
median and p99 are what a request handler would see, with the flusher thread competing for the
GIL as it does in production.

    .venv/bin/python -m bench.bench_producer [--events 200000] [--baseline 5000] [--url URL]
    .venv/bin/python bench/bench_producer.py     # the same, as a script
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from tasks.broker import INGEST_QUEUE
from tasks.producer import configure_recorder, flush_usage, record_usage

NAMESPACE = "meterline-bench"
BASELINE_QUEUE = "bench_baseline"
CUSTOMERS = [f"cus_{i}" for i in range(100)]
METRICS = ["api_calls", "storage_gb", "requests"]


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """Median and p99 in microseconds."""
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, p99 / 1000


def time_calls(count: int, call: Callable[[int], Any]) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * count
    for i in range(count):
        start = clock()
        call(i)
        samples[i] = clock() - start
    return samples


def timer_overhead_ns() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        start = clock()
        samples.append(clock() - start)
    return statistics.median(samples)


def bench_recorder(broker: RedisBroker, events: int, spool: str | None = None) -> dict[str, Any]:
    recorder = configure_recorder(broker=broker, spool_dir=spool)
    record_usage("cus_warmup", "api_calls")  # starts the flusher thread
    flush_usage()
    started = time.perf_counter()
    simple = time_calls(events, lambda i: record_usage(CUSTOMERS[i % 100], METRICS[i % 3]))
    rich_count = max(1, events // 4)
    rich = time_calls(
        rich_count,
        lambda i: record_usage(
            CUSTOMERS[i % 100], "storage_gb", 12.5, event_id=f"req-{i}", properties={"region": "eu"}
        ),
    )
    flush_usage()
    elapsed = time.perf_counter() - started
    stats = recorder.stats
    recorder.close()
    return {
        "simple": percentiles(simple),
        "rich": percentiles(rich),
        "events": events + rich_count,
        "batches": stats.sent_batches,
        "throughput": (events + rich_count) / elapsed,
    }


def bench_direct_send(broker: RedisBroker, events: int) -> tuple[float, float]:
    def bench_baseline_event(event: dict[str, Any]) -> None:
        """Never runs: the benchmark only enqueues."""

    declare = dramatiq.actor(broker=broker, queue_name=BASELINE_QUEUE, actor_name=BASELINE_QUEUE)
    actor = declare(bench_baseline_event)
    return percentiles(
        time_calls(
            events,
            lambda i: actor.send(
                {"customer_id": CUSTOMERS[i % 100], "metric": METRICS[i % 3], "quantity": "1"}
            ),
        )
    )


def clean_up(broker: RedisBroker) -> None:
    for queue in (INGEST_QUEUE, BASELINE_QUEUE):
        broker.flush(queue)
    keys = list(broker.client.scan_iter(match=f"{NAMESPACE}:*"))
    if keys:
        broker.client.delete(*keys)
    broker.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="record_usage calls")
    parser.add_argument("--baseline", type=int, default=5_000, help="direct actor.send calls")
    parser.add_argument("--url", help="Redis URL (default: BROKER_URL, REDIS_URL or embedded)")
    args = parser.parse_args(argv)

    if args.url is None:
        from storage.embedded import broker_url

        args.url = broker_url()
    broker = RedisBroker(url=args.url, namespace=NAMESPACE)
    try:
        overhead = timer_overhead_ns()
        recorder = bench_recorder(broker, args.events)
        spool_dir = tempfile.mkdtemp(prefix="meterline-bench-spool-")
        try:
            spooled = bench_recorder(broker, args.events, spool_dir)
        finally:
            shutil.rmtree(spool_dir, ignore_errors=True)
        send_median, send_p99 = bench_direct_send(broker, args.baseline)
    finally:
        clean_up(broker)

    simple_median, simple_p99 = recorder["simple"]
    rich_median, rich_p99 = recorder["rich"]
    print(f"broker: {args.url} (namespace {NAMESPACE!r}); timer overhead {overhead:.0f} ns/call")
    print(f"{'per call':46} {'median µs':>10} {'p99 µs':>10}")
    print(f"{'record_usage(customer, metric)':46} {simple_median:10.2f} {simple_p99:10.2f}")
    print(
        f"{'record_usage(..., 12.5, event_id, properties)':46} {rich_median:10.2f} {rich_p99:10.2f}"
    )
    spool_median, spool_p99 = spooled["simple"]
    spool_rich_median, spool_rich_p99 = spooled["rich"]
    print(f"{'  the same, spool on (METER_SPOOL_DIR)':46} {spool_median:10.2f} {spool_p99:10.2f}")
    print(f"{'  rich, spool on':46} {spool_rich_median:10.2f} {spool_rich_p99:10.2f}")
    print(f"{'actor.send(event), one message per event':46} {send_median:10.2f} {send_p99:10.2f}")
    print(
        f"record_usage is {send_median / simple_median:.0f}x cheaper per call (median); "
        f"{recorder['events']} events in {recorder['batches']} messages, "
        f"{recorder['throughput']:,.0f} events/s recorded and enqueued end to end"
    )
    print(
        f"spool on: {spool_median / simple_median:.2f}x the median of spool off; "
        f"{spooled['throughput']:,.0f} events/s recorded, spooled and enqueued end to end"
    )


if __name__ == "__main__":
    main()
