"""Where the alert check's time goes when alerts fire, in process: `python -m bench.profile_alerts`.

Each pair is two fresh sets of `--customers` customers: one on the example API plan with its
alert rules off (`alerts: []`), one on the same plan with the default rules (80/95/100 % of each
metric's included usage). Each set gets the same `--batches` batches (the same events, customer
for customer) through the ingest actor in this thread, the off set first in odd pairs and the on
set first in even ones. The first batch of an on set is the crossing batch (storage and bandwidth
cross all three thresholds of almost every customer at once: about 6 alerts per customer); the
later ones have little or nothing left to write. Prints, per batch position, the worker's CPU
(this process), the PostgreSQL backends' CPU (/proc, the server runs here) and the wall time,
off vs on, and where the on set's alert check spent its wall time. Not a throughput benchmark
(that is `bench_alerts`); uses its own database and a claimed Redis db (`bench.common`).

    .venv/bin/python -m bench.profile_alerts [--pairs 4] [--customers 1000] [--batch-size 20000]
        [--batches 3]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import itertools
import pstats
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench import common
from bench.bench_ingest import METRIC_WEIGHTS, METRICS
from bench.profile_ingest import _backend_cpu, _timed

PLAN_OFF = common.API_PLAN.read_text().replace("code: api", "code: api_quiet") + "alerts: []\n"


def _customers(prefix: str, plan_code: str, count: int) -> list[str]:
    from services.customers import create_customer
    from storage import db

    ids = [f"{prefix}_{i:05d}" for i in range(count)]
    starts_at = datetime.now(UTC) - timedelta(days=60)
    with db.connection() as conn, conn.transaction():
        for customer_id in ids:
            create_customer(customer_id, plan_code, starts_at=starts_at, conn=conn)
    return ids


def _batches(seed: int, count: int, size: int, customers: int) -> list[list[tuple[int, str, int]]]:
    """(customer index, metric, quantity) per event, as `bench_ingest.produce` draws them."""
    rng = random.Random(seed)
    metric_of = [m for m, w in zip(METRICS, METRIC_WEIGHTS, strict=True) for _ in range(w)]
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(size):
            metric = metric_of[rng.randrange(len(metric_of))]
            quantity = 1 if metric == "api_calls" else rng.randint(1, 500)
            batch.append((rng.randrange(customers), metric, quantity))
        batches.append(batch)
    return batches


def _instrument(times: collections.Counter[str]) -> None:
    import services.alerts as alerts
    import storage.alerts as alert_store
    import storage.outbox as outbox
    from tasks import ingest as actor

    _timed(actor, "check_segments", "check_segments", times)
    _timed(alerts, "_pending", "  pending rules (caches, fired keys)", times)
    _timed(alerts, "_maybe_reached", "  rollups.reaching", times)
    _timed(alerts, "segments_counters", "  counters read", times)
    _timed(alerts, "segment_report", "  segment_report (pricing)", times)
    _timed(alerts, "estimate", "  estimate (pricing, amounts only)", times)
    _timed(alerts, "_write", "  write (alerts + outbox tx)", times)
    _timed(alert_store, "record", "    alerts insert + outbox + link", times)
    _timed(outbox, "enqueue_many", "      outbox insert", times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument(
        "--cprofile", type=int, default=0, help="print the N costliest functions of the crossing"
    )
    args = parser.parse_args(argv)
    common.BENCH_DATABASE = "meterline_profile_alerts"  # its own: other benchmarks drop theirs
    servers = common.use_bench_servers()
    try:
        from pricing.plans import load_plan
        from storage import db
        from storage.catalog.plans import apply_plan
        from tasks import ingest as actor

        apply_plan(load_plan(common.API_PLAN.read_text()))
        apply_plan(load_plan(PLAN_OFF))
        print(f"machine: {common.machine_line()}")
        events = _batches(1, args.batches, args.batch_size, args.customers)
        ids = itertools.count()
        profiler: cProfile.Profile | None = None

        def run(customers: list[str], batch: list[tuple[int, str, int]]) -> tuple[float, ...]:
            now = datetime.now(UTC).isoformat()
            message = {
                "batch_id": f"b{next(ids)}",
                "events": [
                    {
                        "event_id": f"e{next(ids)}",
                        "customer_id": customers[index],
                        "metric": metric,
                        "quantity": str(quantity),
                        "timestamp": now,
                        "properties": {},
                    }
                    for index, metric, quantity in batch
                ],
            }
            backend = _backend_cpu()
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.runcall(actor.ingest_events, message)
            else:
                actor.ingest_events(message)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return cpu, _backend_cpu() - backend, wall

        # Warm-up: the pool, the plans, the code paths (a pair of its own, not counted).
        warm_off = _customers("w_off", "api_quiet", args.customers)
        warm_on = _customers("w_on", "api", args.customers)
        for batch in events:
            run(warm_off, batch)
            run(warm_on, batch)
        times: collections.Counter[str] = collections.Counter()
        _instrument(times)
        figures: dict[tuple[str, int], list[tuple[float, ...]]] = collections.defaultdict(list)
        crossing = cProfile.Profile()
        spent = [collections.Counter[str]() for _ in events]  # the on side's steps, per batch
        for pair in range(args.pairs):
            off = _customers(f"p{pair}_off", "api_quiet", args.customers)
            on = _customers(f"p{pair}_on", "api", args.customers)
            order = [("off", off), ("on", on)] if pair % 2 == 0 else [("on", on), ("off", off)]
            for side, customers in order:
                for position, batch in enumerate(events):
                    if side == "off":
                        figures[(side, position)].append(run(customers, batch))
                        continue
                    before = dict(times)
                    if args.cprofile and position == 0:
                        profiler = crossing
                    figures[(side, position)].append(run(customers, batch))
                    profiler = None
                    for label, seconds in times.items():
                        spent[position][label] += seconds - before.get(label, 0.0)
        with db.connection() as conn:
            row = conn.execute("SELECT count(*) FROM alerts").fetchone()
        print(
            f"{args.pairs} pairs × {args.batches} batches of {args.batch_size:,} events over "
            f"{args.customers:,} fresh customers per side; {row[0] if row else 0} alerts in all "
            f"(the warm-up pair included)"
        )
        print("per batch (median over the pairs): worker CPU, PostgreSQL CPU, wall, in ms")
        for position in range(args.batches):
            cells = []
            for side in ("off", "on"):
                runs = figures[(side, position)]
                cpu, pg, wall = (statistics.median(r[i] for r in runs) * 1000 for i in range(3))
                cells.append((cpu, pg, wall))
            (c0, p0, w0), (c1, p1, w1) = cells
            name = "crossing" if position == 0 else "after"
            print(
                f"  batch {position + 1} ({name}): off {c0:6.0f} {p0:5.0f} {w0:6.0f} | "
                f"on {c1:6.0f} {p1:5.0f} {w1:6.0f} | on/off CPU (worker + PostgreSQL) "
                f"{(c0 + p0) / (c1 + p1):.3f}, wall {w0 / w1:.3f}"
            )
        print("the on set's alert check, wall ms per batch (mean over the pairs):")
        for position, steps in enumerate(spent):
            for label, seconds in steps.items():
                print(f"  batch {position + 1}: {label:40} {seconds / args.pairs * 1000:8.1f}")
        if args.cprofile:
            print("the crossing batches (on side), cProfile, by own time:")
            pstats.Stats(crossing).sort_stats("tottime").print_stats(args.cprofile)
            pstats.Stats(crossing).sort_stats("cumulative").print_stats(args.cprofile)
    finally:
        db.close_pool()
        servers.release()


if __name__ == "__main__":
    main()
