"""End-to-end ingestion throughput: `record_usage()` → Dramatiq → ingest workers → ledger, rollups
and Redis counters, against the naive design (one Dramatiq message per event, each an INSERT
and an INCRBY) measured in the same run.

    .venv/bin/python -m bench.bench_ingest [--events N] [--workers P] [--threads T]
        [--batch-size B] [--flush-interval S] [--max-hold S] [--producers K] [--customers C]
        [--baseline-events M] [--baseline-threads T] [--latency-seconds S]

With no flags it runs what a user gets: the recorder's own batches (`UsageRecorder`'s
defaults) and `meter worker`'s processes × threads; the baseline runs at its own best
(8 threads per process). Runs on its own database and Redis index (see `bench.common`) and
starts its workers itself: `python -m dramatiq workers.app` for Meterline and `python -m
dramatiq bench.bench_ingest:setup_naive_worker` for the baseline, with as many processes.
Throughput is counted from the first event recorded to the last batch whose counters were
applied (its `ingest_batches.counters_applied_at`), after a warm-up that is then erased, so
the ledger holds exactly the measured events when they are checked: ledger = rollups = Redis
counters = what was sent, per metric (event count, sum and peak of the quantities). Then the
latency from `record_usage` to the counters (per event: its batch's `counters_applied_at`
minus its timestamp), p50 and p99, at full load and at half the measured rate. Beside them:
the CPU of the producer (this process), the workers, PostgreSQL's backends and Redis over the
run (share of one core, µs per event), and each batch's timeline (`bench.ingest_timeline`:
formation, send, queue wait, processing, batches at once).
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq

from bench import common
from bench.ingest_timeline import SendLog, batch_lives, timeline_lines
from cli.worker import DEFAULT_PROCESSES, DEFAULT_THREADS

NAIVE_QUEUE = "bench_naive"
NAIVE_ACTOR = "bench_naive_ingest"
METRICS = ("api_calls", "storage_gb", "bandwidth_gb")
METRIC_WEIGHTS = (8, 1, 1)  # most events are calls; storage and bandwidth are sampled
POLL_S = 0.2


# --- the baseline: one message per event (declared in the baseline's worker processes) -------

_NAIVE_INSERT = """
INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp, properties,
    batch_id)
VALUES (%s, %s, %s, %s, %s, %s, 'naive') ON CONFLICT DO NOTHING RETURNING 1
"""


def naive_counter_key(customer_id: str, metric: str) -> str:
    return f"bench:naive:{{{customer_id}}}:{metric}"


def naive_ingest(event: dict[str, Any]) -> None:
    """The design Meterline replaces: validate, commit one INSERT, INCRBY one counter."""
    from psycopg.types.json import Jsonb

    from pricing.decoding import decode_event
    from storage import db
    from storage.redis_client import get_redis

    parsed = decode_event(event)
    with db.connection() as conn:
        inserted = conn.execute(
            _NAIVE_INSERT,
            (
                parsed.customer_id,
                parsed.event_id,
                parsed.metric,
                parsed.quantity,
                parsed.timestamp,
                Jsonb(parsed.properties),
            ),
        ).fetchone()
    if inserted:  # a redelivery does not count twice (a crash in between still loses it)
        get_redis().incrby(
            naive_counter_key(parsed.customer_id, parsed.metric), int(parsed.quantity)
        )


def declare_naive_actor(broker: dramatiq.Broker) -> dramatiq.Actor[[dict[str, Any]], None]:
    declare = dramatiq.actor(
        broker=broker, actor_name=NAIVE_ACTOR, queue_name=NAIVE_QUEUE, max_retries=3
    )
    return declare(naive_ingest)


def setup_naive_worker() -> None:
    """Called by `python -m dramatiq bench.bench_ingest:setup_naive_worker` in each worker."""
    from tasks.broker import get_broker

    declare_naive_actor(get_broker())


# --- producers --------------------------------------------------------------------------------


class Sent:
    """What the producers sent, per metric: events, Σ quantity, peak quantity (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.peak: dict[str, int] = {}

    def add(self, count: Counter[str], total: Counter[str], peak: dict[str, int]) -> None:
        with self._lock:
            self.count.update(count)
            self.total.update(total)
            for metric, value in peak.items():
                self.peak[metric] = max(self.peak.get(metric, 0), value)


def produce(
    seed: int, count: int, customers: list[str], send: Callable[[str, str, int], Any], sent: Sent
) -> None:
    """Send `count` events over a uniform spread of customers; quantities are whole units."""
    rng = random.Random(seed)
    by_count: Counter[str] = Counter()
    by_total: Counter[str] = Counter()
    peak: dict[str, int] = {}
    metric_of = [m for m, w in zip(METRICS, METRIC_WEIGHTS, strict=True) for _ in range(w)]
    for _ in range(count):
        metric = metric_of[rng.randrange(len(metric_of))]
        quantity = 1 if metric == "api_calls" else rng.randint(1, 500)
        send(customers[rng.randrange(len(customers))], metric, quantity)
        by_count[metric] += 1
        by_total[metric] += quantity
        if quantity > peak.get(metric, 0):
            peak[metric] = quantity
    sent.add(by_count, by_total, peak)


def run_producers(
    threads: int, events: int, customers: list[str], send: Callable[[str, str, int], Any]
) -> tuple[Sent, float]:
    """Send `events` events from `threads` threads; returns what was sent and when it started."""
    sent = Sent()
    shares = [events // threads + (1 if i < events % threads else 0) for i in range(threads)]
    workers = [
        threading.Thread(target=produce, args=(i, share, customers, send, sent), daemon=True)
        for i, share in enumerate(shares)
    ]
    started = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sent, started


# --- the two phases ---------------------------------------------------------------------------


def bench_naive(args: argparse.Namespace, customers: list[str], logs: Path) -> tuple[float, bool]:
    """Events/s of the one-message-per-event design, and whether every event was counted."""
    from storage import db
    from storage.redis_client import get_redis
    from tasks.broker import get_broker

    actor = declare_naive_actor(get_broker())
    seq = itertools.count()

    def send(customer_id: str, metric: str, quantity: int) -> None:
        actor.send(
            {
                "event_id": f"naive-{next(seq)}",
                "customer_id": customer_id,
                "metric": metric,
                "quantity": str(quantity),
                "timestamp": datetime.now(UTC).isoformat(),
                "properties": {},
            }
        )

    get_redis().delete("dramatiq:__heartbeats__")
    with common.dramatiq_workers(
        "bench.bench_ingest:setup_naive_worker",
        processes=args.workers,
        threads=args.baseline_threads,
        queues=[NAIVE_QUEUE],
        log_file=logs / "naive-workers.log",
    ):
        common.wait_for_consumers(get_redis(), args.workers)
        warmup = args.workers * args.baseline_threads * 4
        run_producers(1, warmup, customers, send)
        _wait_for_rows(warmup, args.timeout)
        common.empty_metering_tables()
        common.delete_keys(get_redis(), "bench:naive:*")

        sent, started = run_producers(args.producers, args.baseline_events, customers, send)
        _wait_for_rows(args.baseline_events, args.timeout)
        with db.connection() as conn:
            row = conn.execute(
                "SELECT count(*), sum(quantity), max(received_at) FROM usage_events"
            ).fetchone()
    assert row is not None
    rows, quantity, last = row
    redis = get_redis()
    counted = sum(int(redis.get(k) or 0) for k in redis.scan_iter(match="bench:naive:*"))
    expected = sum(sent.total.values())
    exact = rows == args.baseline_events and quantity == counted == expected
    rate = args.baseline_events / (last.timestamp() - started)
    print(
        f"naive baseline ({args.workers} processes × {args.baseline_threads} threads): "
        f"{args.baseline_events:,} events, one message each (INSERT + INCRBY): {rate:,.0f} "
        f"events/s end to end; ledger {rows:,} rows, Σ quantity ledger {quantity:f} / counters "
        f"{counted} / sent {expected}: {'exact' if exact else 'MISMATCH'}"
    )
    common.empty_metering_tables()
    common.delete_keys(redis, "bench:naive:*")
    return rate, exact


def _wait_for_rows(expected: int, timeout: float) -> None:
    from storage import db

    deadline = time.monotonic() + timeout
    while True:
        with db.connection() as conn:
            row = conn.execute("SELECT count(*) FROM usage_events").fetchone()
        if row and row[0] >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"baseline: {row[0] if row else 0} of {expected} rows stored")
        time.sleep(POLL_S * 2)


def bench_meterline(
    args: argparse.Namespace, customers: list[str], logs: Path
) -> tuple[float, bool]:
    """Events/s of record_usage → ingest workers (with RSS), whether ledger = rollups =
    counters = sent, then the latency record_usage → counters at half that rate."""
    from storage.redis_client import get_redis
    from tasks.producer import configure_recorder, default_recorder, flush_usage, record_usage

    get_redis().delete("dramatiq:__heartbeats__")
    with common.dramatiq_workers(
        "workers.app",
        processes=args.workers,
        threads=args.threads,
        queues=["ingest"],
        log_file=logs / "ingest-workers.log",
    ) as master:
        common.wait_for_consumers(get_redis(), args.workers)
        options = {
            name: value
            for name, value in (
                ("batch_size", args.batch_size),
                ("flush_interval", args.flush_interval),
                ("max_hold", args.max_hold),
            )
            if value is not None
        }
        if options:
            configure_recorder(**options)
        batch_size = default_recorder().batch_size
        warmup = min(args.workers * args.threads * batch_size, 50_000)  # a batch a thread
        run_producers(1, warmup, customers, record_usage)
        flush_usage()
        _wait_for_ingest(warmup, args.timeout)
        common.empty_metering_tables()
        common.delete_keys(get_redis(), "ml:*")

        rss = {"start": common.tree_rss(master.pid)}
        progress = _Progress(args.events, master.pid, rss)
        poller = threading.Thread(target=progress.run, args=(args.timeout,), daemon=True)
        sends = SendLog()
        with sends.watching(default_recorder()):
            cpu_before, wall_before = common.cpu_by_process(master.pid), time.monotonic()
            poller.start()
            sent, started = run_producers(args.producers, args.events, customers, record_usage)
            flush_usage()
            recorded = time.time() - started
            poller.join()
            cpu_after, wall = common.cpu_by_process(master.pid), time.monotonic() - wall_before
        if progress.error:
            raise progress.error
        last_commit = progress.last_commit
        elapsed = last_commit - started
        rate = args.events / elapsed
        print(
            f"meterline: {args.events:,} events recorded in {recorded:.1f} s "
            f"({args.events / recorded:,.0f} events/s producer side), last batch committed and "
            f"counted after {elapsed:.1f} s: {rate:,.0f} events/s end to end"
        )
        names = ("start", "after N/2", "after N")
        print(
            "worker RSS (master + processes): "
            + ", ".join(
                f"{n} {common.mib(rss[n][0])} (largest {common.mib(rss[n][1])})" for n in names
            )
        )
        print(
            f"CPU over the run (share of one core; Redis is shared with other users): "
            f"{common.cpu_line(common.cpu_share(cpu_before, cpu_after, wall), args.events, wall)}"
        )
        _print_latency("latency record_usage → counters, at full load (the queue builds up)")
        print("\n".join(timeline_lines(batch_lives(sends.sends))))
        exact = check_exact(sent, args.events)
        if args.latency_seconds > 0:
            paced = args.latency_rate or rate / 2
            with sends.watching(default_recorder()):
                sends.clear()
                _latency_run(args, customers, paced, record_usage, flush_usage)
            print("\n".join(timeline_lines(batch_lives(sends.sends))))
    return rate, exact


def _latency_run(
    args: argparse.Namespace,
    customers: list[str],
    rate: float,
    record: Callable[[str, str, int], Any],
    flush: Callable[[], Any],
) -> None:
    """Record at `rate` events/s for --latency-seconds; print the latency percentiles."""
    from storage.redis_client import get_redis

    common.empty_metering_tables()
    common.delete_keys(get_redis(), "ml:*")
    count = int(rate * args.latency_seconds)
    per_thread = rate / args.producers

    def send_paced(seed: int, share: int, sent: Sent) -> None:
        started = time.monotonic()
        done = 0
        while done < share:
            chunk = min(100, share - done)
            produce(seed * 1_000_003 + done, chunk, customers, record, sent)
            done += chunk
            ahead = started + done / per_thread - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    sent = Sent()
    shares = [count // args.producers] * args.producers
    threads = [
        threading.Thread(target=send_paced, args=(100 + i, share, sent), daemon=True)
        for i, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flush()
    _wait_for_ingest(sum(shares), args.timeout)
    _print_latency(
        f"latency record_usage → counters, paced ({rate:,.0f} events/s for "
        f"{args.latency_seconds:.0f} s)"
    )


def _print_latency(label: str) -> None:
    """p50 / p99 / max of (the batch's counters applied) − (the event recorded), per event."""
    from storage import db

    with db.connection() as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag),"
            " max(lag) FROM (SELECT extract(epoch FROM b.counters_applied_at - e.timestamp)"
            " AS lag FROM usage_events e JOIN ingest_batches b USING (batch_id)) l"
        ).fetchone()
    assert row is not None
    (p50, p99), worst = row[0] or (0, 0), row[1] or 0
    print(
        f"{label}: p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, max {worst * 1000:,.0f} ms"
    )


class _Progress:
    """Polls ingest_batches until every event is in: RSS at N/2 and N, a line every 5 s."""

    def __init__(self, events: int, worker_pid: int, rss: dict[str, tuple[int, int]]) -> None:
        self.events = events
        self.worker_pid = worker_pid
        self.rss = rss
        self.last_commit = 0.0
        self.error: BaseException | None = None

    def run(self, timeout: float) -> None:
        try:
            self.last_commit = _wait_for_ingest(self.events, timeout, self._sample)
        except BaseException as exc:
            self.error = exc

    def _sample(self, done: int, elapsed: float) -> None:
        if "after N/2" not in self.rss and done >= self.events // 2:
            self.rss["after N/2"] = common.tree_rss(self.worker_pid)
        if done >= self.events:
            self.rss["after N"] = common.tree_rss(self.worker_pid)


def _wait_for_ingest(
    expected: int, timeout: float, sample: Callable[[int, float], None] | None = None
) -> float:
    """Wait until `expected` events are accepted and every batch's counters applied; returns
    the epoch time of the last counters_applied_at."""
    from storage import db

    started = time.monotonic()
    next_line = started + 5
    while True:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(accepted + duplicates + rejected), 0),"
                " count(*) FILTER (WHERE counters_applied_at IS NULL),"
                " max(counters_applied_at) FROM ingest_batches"
            ).fetchone()
        assert row is not None
        done, unapplied, last = int(row[0]), int(row[1]), row[2]
        now = time.monotonic()
        if sample:
            sample(done, now - started)
        if done >= expected and unapplied == 0:
            return float(last.timestamp())
        if sample and now >= next_line:
            print(f"  ... {done:,} events ingested after {now - started:.0f} s", flush=True)
            next_line += 5
        if now - started > timeout:
            raise TimeoutError(f"{done:,} of {expected:,} events ingested after {timeout:.0f}s")
        time.sleep(POLL_S)


def check_exact(sent: Sent, events: int) -> bool:
    """Ledger = rollups = counters = sent, per metric: prints the table, returns the verdict."""
    from storage import db
    from storage.usage import counters

    with db.connection() as conn:
        ledger = {
            r[0]: (int(r[1]), r[2], r[3])
            for r in conn.execute(
                "SELECT metric, count(*), sum(quantity), max(quantity) FROM usage_events"
                " GROUP BY metric"
            )
        }
        rollups = {
            r[0]: (int(r[1]), r[2], r[3])
            for r in conn.execute(
                "SELECT metric, sum(event_count), sum(total), max(maximum) FROM usage_rollups"
                " GROUP BY metric"
            )
        }
        batches = conn.execute(
            "SELECT count(*), coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0),"
            " coalesce(sum(rejected), 0) FROM ingest_batches"
        ).fetchone()
        segments = conn.execute("SELECT customer_id, period_start, version FROM usage_periods")
        segment_rows = segments.fetchall()
    live: dict[str, tuple[int, Decimal, Decimal]] = {}
    unfolded = stale = 0
    for customer_id, start, version in segment_rows:
        seg = counters.read_segment(customer_id, start, [])
        if seg is None:
            unfolded += 1
            continue
        stale += seg.version != version
        for metric, state in seg.state.metrics.items():
            count, total, peak = live.get(metric, (0, Decimal(0), Decimal(0)))
            live[metric] = (
                count + state.count,
                total + state.total,
                max(peak, state.maximum or Decimal(0)),
            )
    assert batches is not None
    print(
        f"batches: {batches[0]:,}, accepted {batches[1]:,}, duplicates {batches[2]}, rejected "
        f"{batches[3]}; counter hashes: {len(segment_rows)} segments, {unfolded} unreadable "
        f"without a rebuild from the rollups, {stale} behind the rollups' version"
    )
    print(f"{'metric':14}{'':10}{'sent':>14}{'ledger':>14}{'rollups':>14}{'counters':>14}")
    exact = unfolded == 0 and stale == 0 and batches[1] == events
    for metric in METRICS:
        figures = [
            (sent.count[metric], sent.total[metric], sent.peak.get(metric, 0)),
            ledger.get(metric, (0, 0, 0)),
            rollups.get(metric, (0, 0, 0)),
            live.get(metric, (0, 0, 0)),
        ]
        for i, label in enumerate(("events", "Σ quantity", "peak")):
            values = [Decimal(f[i] or 0) for f in figures]
            exact &= len(set(values)) == 1
            cells = "".join(f"{v.normalize():>14,f}" for v in values)
            print(f"{metric if i == 0 else '':14}{label:10}{cells}")
    print(f"exactness: {'OK' if exact else 'MISMATCH'} (ledger = rollups = counters = sent = N)")
    return exact


def build_parser(description: str) -> argparse.ArgumentParser:
    """The options of this benchmark (`bench.bench_worker_grid` adds its own to them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=500_000, help="events through Meterline")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_PROCESSES, help="worker processes (both designs)"
    )
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="threads per Meterline worker process"
    )
    parser.add_argument(
        "--batch-size", type=int, help="events per message (default: the recorder's own)"
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        help="seconds a partial batch waits (default: the recorder's)",
    )
    parser.add_argument(
        "--max-hold",
        type=float,
        help="seconds a partial batch may wait longer while the queue is behind (default: the "
        "recorder's; 0: never)",
    )
    parser.add_argument("--producers", type=int, default=2, help="producer threads")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=8,
        help="threads per baseline worker process (default 8: that design's best here)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=10,
        help="seconds recorded at half the measured rate for the latency (0: skip)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="events/s of the latency run (default: half the measured rate); a fixed rate "
        "compares settings at the same load",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)

    servers = common.use_bench_servers()
    logs = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    try:
        print(f"machine: {common.machine_line()}")
        from tasks.producer import default_recorder

        recorder = default_recorder()
        print(
            f"settings: {args.customers} customers on plan api, Meterline workers "
            f"{args.workers} processes × {args.threads} threads, recorder batches of "
            f"{args.batch_size or recorder.batch_size} events or "
            f"{(args.flush_interval or recorder.flush_interval) * 1000:.0f} ms"
            f"{'' if args.batch_size or args.flush_interval else ' (its defaults)'}, max hold "
            f"{recorder.max_hold if args.max_hold is None else args.max_hold} s, "
            f"{args.producers} producer threads; baseline workers {args.workers} × "
            f"{args.baseline_threads}; worker logs in {logs}"
        )
        customers = common.setup_api_customers(args.customers)
        naive, naive_exact = bench_naive(args, customers, logs)
        fast, fast_exact = bench_meterline(args, customers, logs)
        print(
            f"ratio: Meterline {fast:,.0f} events/s / naive {naive:,.0f} events/s = "
            f"{fast / naive:.1f}x (goal: >= 60,000 events/s)"
        )
        if not (naive_exact and fast_exact):
            raise SystemExit(1)
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
