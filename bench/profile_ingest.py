"""Where the ingest time goes, in process: `python -m bench.profile_ingest`.

Runs the ingest actor on batches of random events over the example API plan's customers, one
thread, each batch as the worker gets it (the Dramatiq message decoded by `tasks.encoding`'s
`WorkerEncoder`),
and prints per event: the worker's CPU time (this process), the PostgreSQL backends' CPU time
(read from /proc for the pool's connections: the server runs on this machine), the wall time
of each step, and per batch the round trips to PostgreSQL and Redis. Not a throughput
benchmark (that is `bench_ingest`): a map of the hot path. Uses its own benchmark database and
a claimed Redis db (`bench.common`).

    .venv/bin/python -m bench.profile_ingest [--batch-size 5000] [--batches 10] [--customers 1000]
        [--baseline] [--cprofile FILE]

`--baseline` decodes every other batch with the producers' `MessageEncoder` (each event a dict,
then converted), the others as the worker does, and prints the worker CPU of each: the
before/after of the worker's decoder in one run, alternated.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import itertools
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import setup_api_customers, use_bench_servers


def _timed(module: Any, name: str, label: str, times: collections.Counter[str]) -> None:
    original: Callable[..., Any] | None = getattr(module, name, None)
    if original is None:  # an older revision without this step (run against it to compare)
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[label] += time.perf_counter() - wall

    setattr(module, name, wrapper)


def _count_round_trips(counts: collections.Counter[str]) -> None:
    """Count exchanges with the servers. PostgreSQL: a statement, commit or rollback outside a
    pipeline, a pipeline's sync (a fetch inside it, its outermost exit); the statements a
    pipeline queues before are not round trips. Redis: a send (a pipeline is one)."""
    import psycopg
    import redis.connection

    wait = psycopg.Connection.wait
    queued: set[int] = set()  # connections with pipeline statements not synced yet

    def counted_wait(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(gen, "__name__", "")
        if self._pipeline is None:
            if name == "_execute_gen" or (
                name in ("_commit_gen", "_rollback_gen")
                and self.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE
            ):
                counts["postgresql"] += 1
        elif name == "_execute_gen":
            queued.add(id(self))  # sent without waiting
        elif name == "_fetch_gen" and id(self) in queued:
            counts["postgresql"] += 1  # the first fetch syncs what was queued
            queued.discard(id(self))
        return wait(self, gen, *args, **kwargs)

    pipeline_exit = psycopg.Pipeline.__exit__

    def counted_exit(self: Any, *args: Any) -> None:
        if self.level == 1:  # the final sync (with the commit queued in it, if any)
            counts["postgresql"] += 1
            queued.discard(id(self._conn))
        pipeline_exit(self, *args)

    send = redis.connection.Connection.send_packed_command

    def counted_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["redis"] += 1
        return send(self, *args, **kwargs)

    psycopg.Connection.wait = counted_wait  # type: ignore[method-assign]
    psycopg.Pipeline.__exit__ = counted_exit  # type: ignore[method-assign]
    redis.connection.Connection.send_packed_command = counted_send  # type: ignore[method-assign]


class _GcTime:
    """CPU seconds spent in the cyclic garbage collector while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


def _backend_cpu() -> float:
    """CPU seconds used so far by this database's Meterline backends (user + system)."""
    from storage import db

    with db.connection() as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'meterline'"
            )
        ]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # not on this machine, or gone
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="alternate batches with the producers' decoder (dicts) and print both CPU figures",
    )
    parser.add_argument(
        "--cprofile", metavar="FILE", help="also write a cProfile of the timed batches to FILE"
    )
    args = parser.parse_args(argv)
    servers = use_bench_servers()
    try:
        customers = setup_api_customers(args.customers)
        import services.ingest as ingest
        from tasks import ingest as actor
        from tasks.encoding import MessageEncoder, WorkerEncoder

        times: collections.Counter[str] = collections.Counter()
        _timed(ingest, "_classify", "classify (decode + rules)", times)
        _timed(
            getattr(ingest, "batch_write", None), "write_batch", "  of which the statement", times
        )
        _timed(ingest, "_write", "write (PostgreSQL)", times)
        _timed(actor, "apply_deltas", "counters (Redis)", times)
        _timed(actor, "mark_counters_applied", "mark applied", times)
        encoder = WorkerEncoder()  # what workers.app installs
        _timed(encoder, "decode", "message decode", times)
        rng = random.Random(1)
        ids = itertools.count()

        def message() -> bytes:
            now = datetime.now(UTC).isoformat()
            metrics = ["api_calls"] * 8 + ["bandwidth_gb", "storage_gb"]
            events = [
                {
                    "event_id": f"e{next(ids)}",
                    "customer_id": rng.choice(customers),
                    "metric": rng.choice(metrics),
                    "quantity": str(rng.randint(1, 500)),
                    "timestamp": now,
                    "properties": {},
                }
                for _ in range(args.batch_size)
            ]
            batch = {"batch_id": f"b{next(ids)}", "events": events}
            return encoder.encode({"actor_name": actor.ingest_events.actor_name, "args": [batch]})

        messages = [message() for _ in range(args.batches)]
        actor.ingest_events(encoder.decode(message())["args"][0])  # warm-up: pool, caches
        trips: collections.Counter[str] = collections.Counter()
        _count_round_trips(trips)
        times.clear()
        # CPU time, not wall: the machine is shared and the waits for the servers are not ours.
        profiler = cProfile.Profile(time.process_time) if args.cprofile else None
        backend = _backend_cpu()
        collector = _GcTime()
        gc.callbacks.append(collector)
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        decoders = [encoder, MessageEncoder()] if args.baseline else [encoder]
        cpu_of = [0.0, 0.0]
        for index, raw in enumerate(messages):
            which = index % len(decoders)
            batch_cpu = time.process_time()
            actor.ingest_events(decoders[which].decode(raw)["args"][0])
            cpu_of[which] += time.process_time() - batch_cpu
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        gc.callbacks.remove(collector)
        backend = _backend_cpu() - backend
        n = args.batch_size * args.batches
        print(
            f"{n:,} events in {args.batches} batches of {args.batch_size:,} over "
            f"{args.customers:,} customers: {n / wall:,.0f} events/s in one thread"
        )
        print(
            f"  worker CPU           {cpu / n * 1e6:7.1f} µs/event (this process; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})"
        )
        print(f"    of which the cyclic GC {collector.seconds / n * 1e6:7.1f} µs/event CPU")
        if args.baseline:
            for which, label in enumerate(("worker's decoder (JSON text)", "baseline (dicts)")):
                count = args.batch_size * len(range(which, args.batches, 2))
                print(f"    {label:28} {cpu_of[which] / count * 1e6:7.1f} µs/event CPU")
        print(f"  PostgreSQL CPU       {backend / n * 1e6:7.1f} µs/event (its backends)")
        print(f"  wall                 {wall / n * 1e6:7.1f} µs/event")
        for label, seconds in times.items():
            print(f"    {label:28} {seconds / n * 1e6:7.1f} µs/event wall")
        print(
            f"  round trips per batch: PostgreSQL {trips['postgresql'] / args.batches:.1f}, "
            f"Redis {trips['redis'] / args.batches:.1f} (the message's own, fetched by Dramatiq, "
            "not included)"
        )
        if profiler is not None:
            profiler.dump_stats(args.cprofile)
    finally:
        servers.release()


if __name__ == "__main__":
    main()
