"""Soak: a steady load at half the measured maximum for N minutes, watching what grows.

    .venv/bin/python -m bench.soak --minutes N [--rate EVENTS_PER_S] [--workers P] [--threads T]

Without --rate it first measures the maximum (`bench.bench_scaling`'s drain of a queued backlog
with `meter worker`'s processes × threads) and takes half. Then `meter worker`'s processes run
for the whole soak while `record_usage` (the shipped recorder defaults) sends that rate, and
every --every seconds a line gives: events sent and counted, the largest worker process's RSS
and the workers' total, Redis's memory (the whole server: shared with other users on a shared
machine) and the broker's queue lag (the ingest queue's depth and how long its oldest
waiting message has waited, sampled every second). At the end: the queue lag p50/p99 of the
samples, the latency record_usage → counters per event (p50/p99/max), RSS first → last, and
the final equality (ledger = rollups = counters = sent). Goals (issue 14): RSS flat and
≤ 200 MB per worker process, lag p99 ≤ 1 s, everything equal.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.bench_ingest import Sent, _print_latency, _wait_for_ingest, check_exact, produce
from cli.worker import DEFAULT_PROCESSES, DEFAULT_THREADS

RSS_GOAL = 200 * 2**20
LAG_GOAL_S = 1.0


@dataclass
class Samples:
    lag_s: list[float] = field(default_factory=list)
    largest_rss: list[int] = field(default_factory=list)


def measured_maximum(args: argparse.Namespace, customers: list[str], logs: Path) -> float:
    from bench.bench_scaling import measure

    probe = argparse.Namespace(
        events=args.probe_events, batch_size=2_000, threads=args.threads, timeout=600
    )
    run = measure(args.workers, probe, customers, logs)
    print(f"maximum: {run.rate:,.0f} events/s ({args.workers} × {args.threads}, queued backlog)")
    return run.rate


def paced_producer(rate: float, seconds: float, customers: list[str], sent: Sent) -> None:
    """`record_usage` at `rate` events/s for `seconds`, in chunks of 1/100 s."""
    from tasks.producer import record_usage

    started = time.monotonic()
    done = 0
    for seed in itertools.count():
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            return
        due = int(rate * elapsed) - done
        if due > 0:
            produce(seed, due, customers, record_usage, sent)
            done += due
        time.sleep(0.01)


def ingest_lag_s() -> float:
    """How long the oldest message waiting in the ingest queue has waited (0 when none waits).

    Not `meter ops stats`' oldest_message_age_s: that one is over every queue, and the soak's
    workers consume only `ingest` (the delivery runs the alerts ask for wait in
    `notifications`)."""
    import json

    from tasks.broker import get_broker
    from tasks.names import INGEST_QUEUE

    broker: Any = get_broker()
    client, ns = broker.client, broker.namespace
    head = client.lindex(f"{ns}:{INGEST_QUEUE}", 0)
    raw = client.hget(f"{ns}:{INGEST_QUEUE}.msgs", head) if head is not None else None
    if raw is None:
        return 0.0
    return max(time.time() - int(json.loads(raw)["message_timestamp"]) / 1000, 0.0)


def watch(
    master_pid: int, sent: Sent, until: threading.Event, every: float, samples: Samples
) -> None:
    from storage import db
    from storage.redis_client import get_redis
    from tasks.queues import queue_stats

    started = time.monotonic()
    next_line = started + every
    print(f"{'t (s)':>7}{'sent':>11}{'counted':>11}{'RSS largest':>13}{'RSS total':>11}"
          f"{'Redis mem':>11}{'queue':>7}{'lag (s)':>9}")  # fmt: skip
    while not until.wait(1.0):
        stats = queue_stats()
        samples.lag_s.append(ingest_lag_s())
        total, largest = common.tree_rss(master_pid)
        samples.largest_rss.append(largest)
        if time.monotonic() < next_line:
            continue
        next_line += every
        with db.connection() as conn:
            row = conn.execute("SELECT coalesce(sum(accepted), 0) FROM ingest_batches").fetchone()
        counted = int(row[0]) if row else 0
        redis_memory = int(get_redis().info("memory")["used_memory"])
        print(f"{time.monotonic() - started:>7.0f}{sum(sent.count.values()):>11,}{counted:>11,}"
              f"{common.mib(largest):>13}{common.mib(total):>11}{common.mib(redis_memory):>11}"
              f"{stats['queues'].get('ingest', 0):>7}{samples.lag_s[-1]:>9.2f}",
              flush=True)  # fmt: skip


def soak(args: argparse.Namespace, rate: float, customers: list[str], logs: Path) -> bool:
    from storage.redis_client import get_redis
    from tasks.producer import flush_usage

    common.empty_metering_tables()
    common.delete_keys(get_redis(), "ml:*")
    get_redis().delete("dramatiq:__heartbeats__")
    sent, samples, done = Sent(), Samples(), threading.Event()
    with common.dramatiq_workers(
        "workers.app",
        processes=args.workers,
        threads=args.threads,
        queues=["ingest"],
        log_file=logs / "soak-workers.log",
    ) as master:
        common.wait_for_consumers(get_redis(), args.workers)
        print(f"soak: {rate:,.0f} events/s for {args.minutes} min, {args.workers} × "
              f"{args.threads} workers, the recorder's default batches")  # fmt: skip
        watcher = threading.Thread(
            target=watch, args=(master.pid, sent, done, args.every, samples), daemon=True
        )
        watcher.start()
        paced_producer(rate, args.minutes * 60, customers, sent)
        flush_usage()
        total = sum(sent.count.values())
        _wait_for_ingest(total, args.timeout)
        done.set()
        watcher.join()
    return report(sent, samples, total)


def report(sent: Sent, samples: Samples, total: int) -> bool:
    lags = sorted(samples.lag_s) or [0.0]
    lag_p99 = common.percentile(lags, 0.99)
    rss = samples.largest_rss or [0]
    print()
    print(f"SUMMARY: {total:,} events")
    lag_p50 = common.percentile(lags, 0.5)
    print(
        f"queue lag (oldest waiting message, 1 s samples): p50 {lag_p50:.2f} s, "
        f"p99 {lag_p99:.2f} s, max {lags[-1]:.2f} s (goal p99 <= {LAG_GOAL_S:.0f} s)"
    )
    _print_latency("latency record_usage -> counters, per event")
    print(f"largest worker process RSS: first {common.mib(rss[0])}, last {common.mib(rss[-1])}, "
          f"max {common.mib(max(rss))} (goal flat, <= {common.mib(RSS_GOAL)})")  # fmt: skip
    exact = check_exact(sent, total)
    met = exact and lag_p99 <= LAG_GOAL_S and max(rss) <= RSS_GOAL
    print(f"verdict: {'all goals met' if met else 'a goal is not met (see above)'}")
    return exact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="length of the soak")
    parser.add_argument("--rate", type=float, help="events/s (default: half the measured max)")
    parser.add_argument("--workers", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--probe-events", type=int, default=100_000, help="events to find max")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between lines")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to drain at the end")
    args = parser.parse_args(argv)

    servers = common.use_bench_servers()
    logs = Path(tempfile.mkdtemp(prefix="meterline-soak-"))
    try:
        print(f"machine: {common.machine_line()}")
        customers = common.setup_api_customers(args.customers)
        rate = args.rate or measured_maximum(args, customers, logs) / 2
        exact = soak(args, rate, customers, logs)
        print(f"machine after: {common.machine_line()}")
        if not exact:
            raise SystemExit(1)
    finally:
        from bench.bench_ingest import _close_clients

        _close_clients()
        servers.release()


if __name__ == "__main__":
    main()
