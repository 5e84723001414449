"""Ingest throughput with 1, 2 and 4 worker processes (at `meter worker`'s default threads), and
what saturates first.

    .venv/bin/python -m bench.bench_scaling [--events N] [--batch-size B] [--workers 1,2,4]
        [--threads T]

For each worker count the queue is filled first (N events in batches of B, no worker
running), then the workers start and drain it: throughput is N over the time from
the first batch's transaction (`ingest_batches.received_at`) to the last batch whose counters
were applied, so neither the producer nor the workers' start-up is counted. Meanwhile the CPU
time of the worker processes, PostgreSQL's and Redis's processes is sampled: the share of the
machine's cores each used says what saturates first. Every run ends with the exactness check
(ledger = rollups = counters = sent). The baseline of the ratio is the run with 1 process.

Runs on its own database and Redis index (see `bench.common`). On a machine shared with other
work the figures are low and noisy: the header prints the load average, and so should any
figure quoted from it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.bench_ingest import _wait_for_ingest, check_exact, run_producers
from cli.worker import DEFAULT_THREADS


@dataclass
class Run:
    workers: int
    threads: int
    seconds: float
    rate: float
    cpu: dict[str, float]  # share of one core, per group, over the run
    exact: bool


def _first_batch_started() -> float:
    from storage import db

    with db.connection() as conn:
        row = conn.execute("SELECT min(received_at) FROM ingest_batches").fetchone()
    assert row is not None and row[0] is not None
    return float(row[0].timestamp())


def measure(processes: int, args: argparse.Namespace, customers: list[str], logs: Path) -> Run:
    from storage.redis_client import get_redis
    from tasks.producer import configure_recorder, flush_usage, record_usage

    common.empty_metering_tables()
    common.delete_keys(get_redis(), "ml:*")
    get_redis().delete("dramatiq:__heartbeats__")
    configure_recorder(batch_size=args.batch_size)
    sent, _ = run_producers(1, args.events, customers, record_usage)
    flush_usage()  # the whole backlog is queued before any worker runs
    with common.dramatiq_workers(
        "workers.app",
        processes=processes,
        threads=args.threads,
        queues=["ingest"],
        log_file=logs / f"workers-{processes}.log",
    ) as master:
        common.wait_for_consumers(get_redis(), processes)
        cpu_before, wall_before = common.cpu_by_process(master.pid), time.monotonic()
        last = _wait_for_ingest(args.events, args.timeout)
        cpu_after, wall = common.cpu_by_process(master.pid), time.monotonic() - wall_before
    seconds = last - _first_batch_started()
    cpu = common.cpu_share(cpu_before, cpu_after, wall)
    print(f"-- {processes} worker process(es) × {args.threads} threads:")
    exact = check_exact(sent, args.events)
    return Run(processes, args.threads, seconds, args.events / seconds, cpu, exact)


def print_summary(runs: list[Run], events: int) -> None:
    cores = os.cpu_count() or 1
    print()
    print(f"SUMMARY: ingest of {events:,} queued events (CPU: share of one core; "
          f"the machine has {cores}; Redis is shared with other users)")  # fmt: skip
    header = ("processes", "threads", "seconds", "events/s", "vs 1 proc", "workers CPU",
              "PostgreSQL CPU", "Redis CPU", "exact")  # fmt: skip
    print("".join(f"{h:>15}" for h in header))
    base = runs[0].rate
    for run in runs:
        cells = (run.workers, run.threads, f"{run.seconds:.1f}", f"{run.rate:,.0f}",
                 f"{run.rate / base:.2f}x", f"{run.cpu['workers']:.0%}",
                 f"{run.cpu['postgres']:.0%}", f"{run.cpu['redis']:.0%}",
                 "OK" if run.exact else "MISMATCH")  # fmt: skip
        print("".join(f"{c!s:>15}" for c in cells))
    top = runs[-1]
    busiest = max(top.cpu, key=lambda group: top.cpu[group])
    used = sum(top.cpu.values())
    print(
        f"saturation at {top.workers} processes: the three together used {used:.0%} of one core "
        f"out of {cores * 100}%; the largest share is {busiest} ({top.cpu[busiest]:.0%})"
        + (" — the machine's cores are the limit" if used > 0.85 * cores else "")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2_000,
        help="events per message (default 2,000: 200 ms of a 10k events/s producer, the "
        "recorder's own cut; a backlog of few huge batches could not spread over processes)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per process")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]

    servers = common.use_bench_servers()
    logs = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    try:
        print(f"machine: {common.machine_line()}")
        print(f"worker logs in {logs}")
        customers = common.setup_api_customers(args.customers)
        runs = [measure(n, args, customers, logs) for n in counts]
        print_summary(runs, args.events)
        print(f"machine after: {common.machine_line()}")
        if not all(run.exact for run in runs):
            raise SystemExit(1)
    finally:
        from bench.bench_ingest import _close_clients

        _close_clients()
        servers.release()


if __name__ == "__main__":
    main()
