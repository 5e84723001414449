"""Alerts: ingest throughput with alert rules on vs off, and the latency from the
`record_usage` call of a crossing event to its outbox row under a steady load.

    .venv/bin/python -m bench.bench_alerts [--events N] [--rounds R] [--workers P]
        [--threads T] [--batch-size B] [--customers C] [--probes K] [--load-share F]

Runs on its own database and Redis index (see `bench.common`) with real `dramatiq workers.app`
processes. Phase 1 (throughput), in rounds of two phases each (the order alternates from round
to round): N events over C customers whose plan has no alert rules (`alerts: []`), and N events
over C customers on the same plan with the default rules (80/95/100 % of each metric's included
usage). The metering tables and counters are emptied before each phase. Two kinds of round:
- crossing rounds (R): both phases on customers never seen before, so in the rules-on phase
  every customer's storage and bandwidth cross all three of their thresholds (about 6 alerts
  per customer, mostly in the first batches): the cost of writing alerts;
- steady rounds (S, after them): the first crossing round's customers again, whose alerts
  have fired this period already (kept), so nothing is written: the cost of watching.
Each round prints on/off and the alerts its rules-on phase wrote; the summary gives the
crossing rounds' and the steady rounds' medians separately, and the median of all rounds.
Phase 2 (latency): the producer records a
steady background load at F × the rules-on rate of phase 1 (default half) over its own
customers (`--load-customers`, default 100), and K times a
probe customer records the one event that crosses 80 %; the latency is from just before that
`record_usage` call to the moment its outbox row is visible (polled every 2 ms).
"""

from __future__ import annotations

import argparse
import os
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


def _empty(alerts: bool = True) -> None:
    """Empty the metering tables and counters (and the alerts and outbox: `alerts`)."""
    from storage import db
    from storage.redis_client import get_redis

    common.empty_metering_tables()
    if alerts:
        with db.connection() as conn:
            conn.execute("TRUNCATE alerts, outbox")
    common.delete_keys(get_redis(), "ml:*")


def _alert_count() -> int:
    from storage import db

    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM alerts").fetchone()
    return int(row[0]) if row else 0


def _throughput(events: int, customers: list[str], timeout: float) -> tuple[float, int]:
    """Events/s of one phase, and the alerts it wrote."""
    from tasks.producer import flush_usage, record_usage

    _empty(alerts=False)
    before = _alert_count()
    _, started = run_producers(2, events, customers, record_usage)
    flush_usage()
    last = _wait_for_ingest(events, timeout)
    return events / (last - started), _alert_count() - before


def _summary(name: str, rounds: list[tuple[float, float]]) -> None:
    if not rounds:
        return
    off = statistics.median(r[0] for r in rounds)
    on = statistics.median(r[1] for r in rounds)
    ratios = ", ".join(f"{r[1] / r[0]:.3f}" for r in rounds)
    print(
        f"{name} (median of {len(rounds)}): rules off {off:,.0f} events/s, rules on "
        f"{on:,.0f} events/s: on/off = {on / off:.3f} ({(1 - on / off) * 100:+.1f} % slower; "
        f"goal <= 5 %); each round's on/off: {ratios}"
    )


def phase_throughput(args: argparse.Namespace) -> float:
    """Events/s with the rules off and on, crossing rounds and steady rounds; prints each
    round and the medians. Returns the median rules-on rate of all rounds."""
    rules = common.API_PLAN.read_text()
    warm = [_customers("warm_off", PLAN_OFF, args.customers)]
    warm.append(_customers("warm_on", rules, args.customers))
    for customers in warm:  # warm-up: the workers' code paths, pools and plans
        _throughput(min(args.events, 50_000), customers, args.timeout)
    _empty()
    crossing: list[tuple[float, float]] = []
    steady: list[tuple[float, float]] = []
    first: tuple[list[str], list[str]] | None = None
    for round_ in range(args.rounds + args.steady_rounds):
        if round_ < args.rounds:
            kind = "crossing"
            pair = (
                _customers(f"r{round_}_off", PLAN_OFF, args.customers),
                _customers(f"r{round_}_on", rules, args.customers),
            )
            first = first or pair
        else:
            kind = "steady"
            assert first is not None  # --rounds >= 1
            pair = first
        results: dict[str, tuple[float, int]] = {}
        for side in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            results[side] = _throughput(
                args.events, pair[0] if side == "off" else pair[1], args.timeout
            )
        (off, _), (on, written) = results["off"], results["on"]
        (crossing if kind == "crossing" else steady).append((off, on))
        print(
            f"  round {round_ + 1} ({kind}): rules off {off:,.0f} events/s, rules on "
            f"{on:,.0f} events/s: on/off {on / off:.3f} ({written} alerts written, "
            f"load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    _summary("crossing rounds", crossing)
    _summary("steady rounds", steady)
    _summary("all rounds", crossing + steady)
    return statistics.median(on for _, on in crossing + steady)


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
    parser.add_argument(
        "--rounds", type=int, default=3, help="crossing rounds of off/on (fresh customers)"
    )
    parser.add_argument(
        "--steady-rounds", type=int, default=2, help="rounds of off/on with nothing to write"
    )
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
