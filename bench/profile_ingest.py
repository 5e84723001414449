"""Where the ingest time goes, per step, in process: `python -m bench.profile_ingest`.

Runs `ingest_events` on batches of random events over the example API plan's customers, one
thread, and prints µs per event for each step: wall time, and CPU time of this thread (the
difference is time spent waiting for PostgreSQL or Redis). Not a throughput benchmark (that is
`bench_ingest`): a map of the hot path. Uses the benchmark database and a claimed Redis db.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import setup_api_customers, use_bench_servers


def _timed(module: Any, name: str, label: str, times: collections.Counter[str]) -> None:
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            times[f"{label} wall"] += time.perf_counter() - wall
            times[f"{label} cpu"] += time.thread_time() - cpu

    setattr(module, name, wrapper)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args(argv)
    servers = use_bench_servers()
    try:
        customers = setup_api_customers(args.customers)
        import services.ingest as ingest
        from tasks import ingest as actor

        times: collections.Counter[str] = collections.Counter()
        _timed(ingest, "_classify", "classify", times)
        _timed(ingest.ledger, "insert_events", "ledger", times)
        _timed(ingest, "build_deltas", "build_deltas", times)
        _timed(ingest.rollups, "apply", "rollups", times)
        _timed(actor, "apply_deltas", "counters", times)
        rng = random.Random(1)
        ids = itertools.count()

        def batch() -> dict[str, Any]:
            now = datetime.now(UTC).isoformat()
            metrics = ["api_calls", "api_calls", "bandwidth_gb", "storage_gb"]
            events = [
                {
                    "event_id": f"e{next(ids)}",
                    "customer_id": rng.choice(customers),
                    "metric": rng.choice(metrics),
                    "quantity": "1",
                    "timestamp": now,
                    "properties": {},
                }
                for _ in range(args.batch_size)
            ]
            return {"batch_id": f"b{next(ids)}", "events": events}

        batches = [batch() for _ in range(args.batches)]
        actor.ingest_events(batch())  # warm-up: connections, plan cache, partitions
        times.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        for message in batches:
            actor.ingest_events(message)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = args.batch_size * args.batches
        print(
            f"{n:,} events: {n / wall:,.0f} events/s, {wall / n * 1e6:.1f} µs/event wall, "
            f"{cpu / n * 1e6:.1f} µs/event CPU (this process)"
        )
        for label, seconds in sorted(times.items(), key=lambda item: -item[1]):
            print(f"  {label:18} {seconds / n * 1e6:7.1f} µs/event")
    finally:
        servers.release()


if __name__ == "__main__":
    main()
