"""Alerts: ingest throughput with alert rules on vs off, and the latency from the
`record_usage` call of a crossing event to its outbox row under a steady load.

    .venv/bin/python -m bench.bench_alerts [--events N] [--rounds R] [--workers P]
        [--threads T] [--batch-size B] [--customers C] [--probes K] [--load-share F]

Runs on its own database and Redis index (see `bench.common`) with real `dramatiq workers.app`
processes. Phase 1 (throughput): R rounds, each ingesting N events over C customers whose plan
has no alert rules (`alerts: []`), then N events over C customers on the same plan with the
default rules (80/95/100 % of each metric's included usage; storage and bandwidth cross theirs
during the run, so alerts are written too); the tables and counters are emptied between
phases, and the figure is the median of the rounds. Phase 2 (latency): the producer records a
steady background load at F × the rules-on rate of phase 1 (default half) over its own
customers (`--load-customers`, default 100), and K times a
probe customer records the one event that crosses 80 %; the latency is from just before that
`record_usage` call to the moment its outbox row is visible (polled every 2 ms).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import common
from bench.bench_ingest import _wait_for_ingest, run_producers

POLL_S = 0.002

PLAN_OFF = common.API_PLAN.read_text().replace("code: api", "code: api_quiet") + "alerts: []\n"
PLAN_PROBE = """
code: probe
name: Probe
currency: USD
metrics:
  api_calls: {aggregation: sum}
charges:
  - {metric: api_calls, model: standard, unit_amount: "0.01", included: 10}
"""


def _customers(prefix: str, plan_text: str, count: int) -> list[str]:
    from datetime import UTC, datetime, timedelta

    from pricing.plans import load_plan
    from services.customers import create_customer
    from storage import db
    from storage.catalog.plans import apply_plan

    plan = load_plan(plan_text)
    apply_plan(plan)
    ids = [f"{prefix}_{i:05d}" for i in range(count)]
    starts_at = datetime.now(UTC) - timedelta(days=60)
    with db.connection() as conn, conn.transaction():
        for customer_id in ids:
            create_customer(customer_id, plan.code, starts_at=starts_at, conn=conn)
    return ids


def _empty() -> None:
    from storage import db
    from storage.redis_client import get_redis

    common.empty_metering_tables()
    with db.connection() as conn:
        conn.execute("TRUNCATE alerts, outbox")
    common.delete_keys(get_redis(), "ml:*")


def _alert_count() -> int:
    from storage import db

    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM alerts").fetchone()
    return int(row[0]) if row else 0


def _throughput(events: int, customers: list[str], timeout: float) -> float:
    from tasks.producer import flush_usage, record_usage

    _empty()
    _, started = run_producers(2, events, customers, record_usage)
    flush_usage()
    last = _wait_for_ingest(events, timeout)
    return events / (last - started)


def phase_throughput(args: argparse.Namespace) -> float:
    """Median events/s with the rules off and on; prints both and the ratio. Returns 'on'."""
    quiet = _customers("off", PLAN_OFF, args.customers)
    ruled = _customers("on", common.API_PLAN.read_text(), args.customers)
    _throughput(min(args.events, 50_000), quiet, args.timeout)  # warm-up
    off: list[float] = []
    on: list[float] = []
    alerts: list[int] = []
    for round_ in range(args.rounds):
        off.append(_throughput(args.events, quiet, args.timeout))
        on.append(_throughput(args.events, ruled, args.timeout))
        alerts.append(_alert_count())
        print(
            f"  round {round_ + 1}: rules off {off[-1]:,.0f} events/s, "
            f"rules on {on[-1]:,.0f} events/s ({alerts[-1]} alerts written)",
            flush=True,
        )
    off_rate, on_rate = statistics.median(off), statistics.median(on)
    print(
        f"throughput (median of {args.rounds}): rules off {off_rate:,.0f} events/s, "
        f"rules on {on_rate:,.0f} events/s: on/off = {on_rate / off_rate:.3f} "
        f"({(1 - on_rate / off_rate) * 100:+.1f} % slower; goal <= 5 %)"
    )
    return on_rate


def _outbox_seen(customer_id: str, deadline: float) -> float:
    from storage import db

    with db.connection() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT 1 FROM outbox WHERE payload->>'customer_id' = %s", (customer_id,)
            ).fetchone()
            conn.commit()
            if row is not None:
                return time.monotonic()
            time.sleep(POLL_S)
    raise TimeoutError(f"no outbox row for {customer_id}")


def phase_latency(args: argparse.Namespace, rate: float) -> None:
    """p50/p99 from record_usage of the crossing event to its outbox row, under load."""
    from tasks.producer import record_usage

    background = _customers("load", PLAN_OFF, args.load_customers)
    probes = _customers("probe", PLAN_PROBE, args.probes)
    _empty()
    load = rate * args.load_share
    stop = threading.Event()

    def steady() -> None:
        tick = 0.01
        per_tick = max(1, round(load * tick))
        next_at = time.monotonic()
        i = 0
        while not stop.is_set():
            for _ in range(per_tick):
                record_usage(background[i % len(background)], "api_calls", 1)
                i += 1
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))

    loader = threading.Thread(target=steady, daemon=True)
    loader.start()
    time.sleep(2)  # the load settles
    samples: list[float] = []
    try:
        for customer_id in probes:
            started = time.monotonic()
            record_usage(customer_id, "api_calls", 8)  # 8 of 10 included: 80 %
            seen = _outbox_seen(customer_id, started + args.timeout)
            samples.append(seen - started)
            time.sleep(0.05)
    finally:
        stop.set()
        loader.join()
    figures = common.latency_summary(samples)
    print(
        f"alert latency (record_usage -> outbox row), {len(samples)} probes under "
        f"{load:,.0f} events/s ({args.load_share:.0%} of the rules-on rate): "
        f"p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms, max {figures['max']:.0f} ms "
        f"(goal: p99 <= 1000 ms)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off/on")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument(
        "--batch-size", type=int, help="events per message (default: the recorder's)"
    )
    parser.add_argument("--customers", type=int, default=1000, help="customers per phase")
    parser.add_argument("--probes", type=int, default=200, help="crossings timed")
    parser.add_argument(
        "--load-customers", type=int, default=100, help="customers of the steady load"
    )
    parser.add_argument("--load-share", type=float, default=0.5, help="of the measured rate")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    args = parser.parse_args(argv)

    common.BENCH_DATABASE = "meterline_bench_alerts"  # its own: other benchmarks drop theirs
    servers = common.use_bench_servers()
    from storage.migrate import migrate

    migrate(servers.database_url)
    logs = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    try:
        from storage.redis_client import get_redis
        from tasks.producer import configure_recorder

        print(f"machine: {common.machine_line()}")
        print(
            f"settings: {args.customers} customers per phase, {args.workers} worker processes × "
            f"{args.threads} threads, batch size {args.batch_size or 'default'}; "
            f"worker logs in {logs}"
        )
        get_redis().delete("dramatiq:__heartbeats__")
        with common.dramatiq_workers(
            "workers.app",
            processes=args.workers,
            threads=args.threads,
            queues=["ingest"],
            log_file=logs / "workers.log",
        ):
            common.wait_for_consumers(get_redis(), args.workers)
            if args.batch_size:
                configure_recorder(batch_size=args.batch_size)
            rate = phase_throughput(args)
            phase_latency(args, rate)
    finally:
        _close_clients()
        servers.release()


def _close_clients() -> None:
    from storage import db
    from storage.redis_client import reset_redis
    from tasks.producer import default_recorder

    default_recorder().close(timeout=10)
    db.close_pool()
    reset_redis()


if __name__ == "__main__":
    main()
