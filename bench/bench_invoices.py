"""Closing a billing period: N customers' invoices by fan-out to worker processes, against the
same invoices generated one after the other in one process.

Set-up (not timed): the database `meterline_bench_inv` is recreated and Redis database 12 is
claimed (the claim key test sessions use, so none of them takes it meanwhile) and flushed. A plan
with four metrics (graduated, standard with free units, volume on a unique count, package) and N
customers whose previous calendar month is a whole billing period (UTC, Europe/Berlin and
Asia/Tokyo). Their usage goes in through `services.ingest.ingest_batch`, the ingest actor's own
path (ledger, rollups), with `now` set to a minute after that month ended, as if it had arrived
on time: eight events per customer on the 5th-25th.

Baseline: `services.invoice_lifecycle.generate` for the first --baseline customers, sequentially,
in this process; those invoices are then deleted (their totals kept to compare). Fan-out: workers
start (`python -m dramatiq workers.app --processes P --threads T --queues billing`) and are waited
for; the clock starts, `fan_out_period(label)` (the `close_period` actor's body) runs here (job
rows, one message per customer) and the clock stops when all N invoices exist. Checked after: N
invoices, N succeeded jobs, no duplicate, and the baseline customers' totals equal to the
sequential ones.

    .venv/bin/python -m bench.bench_invoices [--customers 10000] [--baseline 1000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis as redis_lib
from psycopg import sql

from bench.common import stop_process_group, wait_for_consumers

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
DATABASE = "meterline_bench_inv"
REDIS_DB = 12
CLAIM_KEY = f"meterline:test-session-db:{REDIS_DB}"  # as tests/conftest.py claims indexes
ZONES = ("UTC", "UTC", "Europe/Berlin", "Asia/Tokyo")
EVENTS_PER_BATCH = 500

PLAN = """
code: bench
name: Bench
currency: USD
base_fee: "29.00"
tax_rate: "0.20"
metrics:
  api_calls:  {aggregation: sum}
  requests:   {aggregation: count, event: api_calls}
  storage_gb: {aggregation: max}
  seats:      {aggregation: unique_count, event: login, field: user_id}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 1000, unit_amount: "0"}
      - {up_to: 100000, unit_amount: "0.002"}
      - {up_to: null, unit_amount: "0.001"}
  - {metric: requests, model: package, package_size: 100, package_amount: "0.50", included: 2}
  - {metric: storage_gb, model: standard, unit_amount: "0.10", included: 5}
  - metric: seats
    model: volume
    tiers: [{up_to: 5, unit_amount: "8"}, {up_to: null, unit_amount: "6"}]
"""


def url_with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def use_bench_servers() -> redis_lib.Redis:
    """Recreate the database, claim and flush Redis db 12, point this process's env at them."""
    claims = redis_lib.Redis.from_url(url_with_path(REDIS_URL, "/0"))
    owner = f"bench_invoices:{socket.gethostname()}:{os.getpid()}"
    if not claims.set(CLAIM_KEY, owner, nx=True, ex=3600):
        raise SystemExit(
            f"Redis db {REDIS_DB} is claimed by {claims.get(CLAIM_KEY)!r}; retry later"
        )
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    redis_url = url_with_path(REDIS_URL, f"/{REDIS_DB}")
    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    os.environ.update(
        DATABASE_URL=url_with_path(POSTGRES_URL, f"/{DATABASE}"),
        REDIS_URL=redis_url,
        BROKER_URL=redis_url,
    )
    os.environ.pop("SENTRY_DSN", None)
    return client


def release(client: redis_lib.Redis) -> None:
    client.flushdb()
    redis_lib.Redis.from_url(url_with_path(REDIS_URL, "/0")).delete(CLAIM_KEY)


def setup(count: int) -> str:
    """The plan, `count` customers, and their usage in the previous month; its label."""
    from pricing.periods import billing_period
    from pricing.plans import load_plan
    from services.ingest import ingest_batch
    from storage import db
    from storage.catalog.plans import apply_plan

    apply_plan(load_plan(PLAN))
    now = datetime.now(UTC)
    current = billing_period(now)
    previous = billing_period(current.start - timedelta(days=1))
    starts_at = previous.start - timedelta(days=40)
    ids = [f"cus_{i:06d}" for i in range(count)]
    with db.connection() as conn, conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY customers (id, plan_code, timezone, starts_at) FROM STDIN") as copy:
            for i, customer_id in enumerate(ids):
                copy.write_row((customer_id, "bench", ZONES[i % len(ZONES)], starts_at))
        with cur.copy("COPY subscriptions (customer_id, plan_code, starts_at) FROM STDIN") as copy:
            for customer_id in ids:
                copy.write_row((customer_id, "bench", starts_at))
    arrival = previous.end + timedelta(minutes=1)
    events = []
    for i, customer_id in enumerate(ids):
        day = previous.start + timedelta(days=5 + i % 20, hours=12)
        for n in range(4):
            events.append(_event(customer_id, i, n, "api_calls", 200 * (i % 50) + n, day))
        for n in range(2):
            events.append(_event(customer_id, i, n, "storage_gb", 3 + (i + n) % 9, day))
            events.append(_event(customer_id, i, n, "login", 1, day, {"user_id": f"u{i % 7 + n}"}))
    for offset in range(0, len(events), EVENTS_PER_BATCH):
        batch = events[offset : offset + EVENTS_PER_BATCH]
        outcome = ingest_batch(f"bench-{offset}", batch, now=arrival)
        assert outcome.accepted == len(batch), outcome.rejected
    return previous.label


def _event(
    customer_id: str,
    i: int,
    n: int,
    metric: str,
    quantity: int,
    at: datetime,
    properties: dict[str, str] | None = None,
) -> dict[str, object]:
    return {
        "event_id": f"{metric}-{i}-{n}",
        "customer_id": customer_id,
        "metric": metric,
        "quantity": str(quantity),
        "timestamp": (at + timedelta(minutes=n)).isoformat(),
        "properties": properties or {},
    }


def sequential(count: int, label: str) -> tuple[float, dict[str, str]]:
    """Generate `count` invoices one after the other here; (seconds, totals by customer)."""
    from services import invoice_lifecycle as invoices
    from services import periods
    from storage import db

    keys = periods.keys_for_label(label)[:count]  # each customer's period, in its zone
    started = time.perf_counter()
    totals = {}
    for key in keys:
        totals[key.customer_id] = str(invoices.generate(key.customer_id, key.period_start).total)
    elapsed = time.perf_counter() - started
    with db.connection() as conn:
        conn.execute("DELETE FROM invoice_lines")
        conn.execute("DELETE FROM invoices")
    return elapsed, totals


def start_workers(processes: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), METER_POOL_MAX=str(threads + 2))
    command = [
        *(sys.executable, "-m", "dramatiq", "workers.app"),
        *("--processes", str(processes), "--threads", str(threads), "--queues", "billing"),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True
        )


def fan_out(label: str, count: int) -> tuple[float, float]:
    """Close the period; (seconds to fan out, seconds until every invoice exists)."""
    from storage import db
    from tasks.billing import fan_out_period

    started = time.perf_counter()
    jobs = fan_out_period(label)
    fanned = time.perf_counter() - started
    assert len(jobs) == count, f"{len(jobs)} jobs for {count} customers"
    with db.connection() as conn:
        while True:
            (made,) = conn.execute(
                "SELECT count(*) FROM invoices WHERE period_label = %s", (label,)
            ).fetchone() or (0,)
            (failed,) = conn.execute(
                "SELECT count(*) FROM invoice_jobs WHERE status = 'failed'"
            ).fetchone() or (0,)
            if made + failed >= count:
                break
            time.sleep(0.1)
    assert failed == 0, f"{failed} invoice jobs failed: see `meter ops failed`"
    return fanned, time.perf_counter() - started


def check(label: str, count: int, totals: dict[str, str]) -> None:
    from storage import db

    with db.connection() as conn:
        rows = conn.execute(
            "SELECT customer_id, total::text FROM invoices WHERE period_label = %s", (label,)
        ).fetchall()
        (succeeded,) = conn.execute(
            "SELECT count(*) FROM invoice_jobs WHERE status = 'succeeded'"
        ).fetchone() or (0,)
    by_customer = dict(rows)
    assert len(rows) == len(by_customer) == count, "one invoice per customer"
    assert succeeded == count
    for customer_id, total in totals.items():
        assert by_customer[customer_id] == total, customer_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000, help="sequential invoices")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    baseline = min(args.baseline, args.customers)

    client = use_bench_servers()
    log = Path(f"/tmp/bench_invoices_workers_{os.getpid()}.log")
    master = None
    try:
        started = time.perf_counter()
        label = setup(args.customers)
        print(
            f"set-up: {args.customers:,} customers and their usage in {label}"
            f" in {time.perf_counter() - started:.1f} s"
        )
        seconds, totals = sequential(baseline, label)
        sequential_rate = baseline / seconds
        print(
            f"sequential, one process: {baseline:,} invoices in {seconds:.1f} s"
            f" = {sequential_rate:,.0f} invoices/s"
        )
        master = start_workers(args.processes, args.threads, log)
        wait_for_consumers(client, args.processes)
        fanned, total = fan_out(label, args.customers)
        check(label, args.customers, totals)
    finally:
        if master is not None:
            stop_process_group(master)
        release(client)
    rate = args.customers / total
    print(
        f"fan-out ({args.processes} processes × {args.threads} threads): {args.customers:,}"
        f" invoices in {total:.1f} s = {rate:,.0f} invoices/s (the fan-out itself"
        f" {fanned:.1f} s); {rate / sequential_rate:.1f}× the sequential rate;"
        f" goal ≤ 60 s for 10,000: {'met' if total * 10_000 / args.customers <= 60 else 'missed'}"
    )
    print(
        f"checked: one invoice per customer, every job succeeded, the {baseline:,} baseline"
        f" customers' totals equal; worker log {log}"
    )


if __name__ == "__main__":
    main()
