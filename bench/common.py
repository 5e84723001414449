"""What the metering benchmarks share: their own servers, the API plan and its customers, worker
subprocesses, percentiles, resident memory and the CPU used by each kind of process.

A benchmark never touches anyone's data: it recreates the database `meterline_bench` on the
PostgreSQL server and claims a Redis database index the way test sessions do (a key in database
0 that test sessions skip), flushes it, and points DATABASE_URL / REDIS_URL / BROKER_URL at them
for itself and every worker it starts. `use_bench_servers()` must run before anything reads the
settings (the broker, the pool and the Redis client are created from them on first use).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped]
import psycopg
import redis as redis_lib
from psycopg import sql

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "meterline_bench")
# 0 holds the claims; tests take 15 downwards, bench_invoices takes 12.
REDIS_DB_CHOICES = (13, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
REPO = Path(__file__).resolve().parent.parent
API_PLAN = REPO / "examples" / "plans" / "api.yaml"
# The tables one ingest writes (and a benchmark empties between phases).
METERING_TABLES = (
    "usage_events",
    "event_ids",
    "ingest_batches",
    "ingest_totals",
    "rejected_events",
    "failed_batches",
    "usage_periods",
    "usage_rollups",
    "usage_rollup_uniques",
    "usage_daily",
)
_CLAIM_KEY = "meterline:test-session-db:{}"  # the key tests/conftest.py claims indexes with
_CLAIM_TTL_S = 3600


@dataclass(frozen=True)
class BenchServers:
    database_url: str
    redis_url: str
    claim_key: str

    def release(self) -> None:
        """Give the Redis database index back (its keys are flushed first)."""
        client = redis_lib.Redis.from_url(self.redis_url)
        claims = redis_lib.Redis.from_url(_with_path(REDIS_URL, "/0"))
        try:
            client.flushdb()
            claims.delete(self.claim_key)
        finally:
            client.close()
            claims.close()


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def use_bench_servers() -> BenchServers:
    """Recreate the benchmark database, claim and flush a Redis database, point the env at them.

    Call before anything creates the broker, the pool or the Redis client of this process.
    """
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        name = sql.Identifier(BENCH_DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    database_url = _with_path(POSTGRES_URL, f"/{BENCH_DATABASE}")

    claims = redis_lib.Redis.from_url(_with_path(REDIS_URL, "/0"))
    owner = f"bench:{socket.gethostname()}:{os.getpid()}"
    try:
        for index in REDIS_DB_CHOICES:
            key = _CLAIM_KEY.format(index)
            if claims.set(key, owner, nx=True, ex=_CLAIM_TTL_S):
                break
        else:
            raise RuntimeError(f"no free Redis database among {REDIS_DB_CHOICES} on {REDIS_URL}")
    finally:
        claims.close()
    redis_url = _with_path(REDIS_URL, f"/{index}")
    client = redis_lib.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()

    # The benchmark database is created empty: its schema is migrated on first use.
    os.environ.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, BROKER_URL=redis_url, METER_AUTO_MIGRATE="1"
    )
    os.environ.pop("SENTRY_DSN", None)
    from storage.settings import reset_settings

    reset_settings()
    return BenchServers(database_url, redis_url, key)


def setup_api_customers(count: int) -> list[str]:
    """Store the example API plan and `count` customers on it (billed from 60 days ago)."""
    from pricing.plans import load_plan
    from services.customers import create_customer
    from storage import db
    from storage.catalog.plans import apply_plan

    apply_plan(load_plan(API_PLAN.read_text()))
    ids = [f"cus_{i:05d}" for i in range(count)]
    starts_at = datetime.now(UTC) - timedelta(days=60)
    with db.connection() as conn, conn.transaction():
        for customer_id in ids:
            create_customer(customer_id, "api", starts_at=starts_at, conn=conn)
    return ids


def empty_metering_tables() -> None:
    """Empty the ledger, rollups and ingest bookkeeping (customers and plans stay)."""
    from storage import db

    with db.connection() as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, METERING_TABLES)))
        )


def delete_keys(client: redis_lib.Redis, pattern: str) -> int:
    """Delete the keys matching `pattern` (SCAN, not KEYS: the server is shared)."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


# --- worker subprocesses --------------------------------------------------------------------


@contextmanager
def dramatiq_workers(
    target: str, *, processes: int, threads: int, queues: Sequence[str], log_file: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m dramatiq TARGET` in its own process group; stopped on exit (also on
    Ctrl-C or an error): SIGTERM to the master, then SIGKILL to its group after 30 s."""
    env = dict(os.environ, METER_POOL_MAX=str(max(10, threads + 2)), PYTHONPATH=str(REPO))
    # What `meter worker` sets from METER_WORKER_IDLE_POLL_MS (Dramatiq's own default, 1 s, is
    # how long an idle worker may sleep before it looks at the queue again).
    env.setdefault("dramatiq_worker_timeout", str(_idle_poll_ms()))
    command = [
        sys.executable, "-m", "dramatiq", target,
        "--processes", str(processes), "--threads", str(threads),
        "--queues", *queues, "--worker-shutdown-timeout", "20000",
    ]  # fmt: skip
    with log_file.open("ab") as log:
        master = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
        )
    try:
        yield master
    finally:
        stop_process_group(master)


def _idle_poll_ms() -> int:
    from storage.settings import get_settings

    return get_settings().METER_WORKER_IDLE_POLL_MS


def stop_process_group(master: subprocess.Popen[bytes]) -> None:
    if master.poll() is not None:
        return
    master.send_signal(signal.SIGTERM)
    try:
        master.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(master.pid, signal.SIGKILL)  # the group started for this master alone
        master.wait(timeout=10)


def wait_for_consumers(client: redis_lib.Redis, count: int, timeout: float = 60.0) -> None:
    """Wait until `count` worker processes have polled the broker (Dramatiq's heartbeats)."""
    deadline = time.monotonic() + timeout
    while client.zcard("dramatiq:__heartbeats__") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} worker processes did not start within {timeout:.0f}s")
        time.sleep(0.1)


def tree_rss(pid: int) -> tuple[int, int]:
    """(total, largest) resident memory in bytes of process `pid` and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    sizes = []
    for proc in procs:
        try:
            sizes.append(proc.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return sum(sizes), max(sizes, default=0)


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


# --- CPU per kind of process ----------------------------------------------------------------

#: The kinds of process a metering benchmark's CPU is split into.
CPU_GROUPS = ("producer", "workers", "postgres", "redis")


def _bench_backends() -> set[int]:
    """The PostgreSQL server processes serving the benchmark's database (not other users')."""
    from storage import db

    with db.connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
    return {int(row[0]) for row in rows}


def cpu_by_process(master_pid: int) -> dict[tuple[str, int], float]:
    """CPU seconds used so far per (group, pid): this process (the producer), the worker tree
    of `master_pid`, the PostgreSQL backends of the benchmark's database, the Redis server
    (shared: other users' commands count too). Read from /proc through psutil."""
    found: dict[tuple[str, int], float] = {}
    try:
        root = psutil.Process(master_pid)
        tree = {p.pid for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        tree = set()
    backends = _bench_backends()
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
        times, pid = proc.info["cpu_times"], proc.info["pid"]
        if times is None:
            continue
        group = (
            "producer" if pid == me
            else "workers" if pid in tree
            else "postgres" if pid in backends
            else "redis" if proc.info["name"] == "redis-server"
            else None
        )  # fmt: skip
        if group is not None:
            found[(group, pid)] = times.user + times.system
    return found


def cpu_share(
    before: dict[tuple[str, int], float], after: dict[tuple[str, int], float], wall: float
) -> dict[str, float]:
    """Per group, CPU seconds used between the samples over the wall time (1.0 = one core);
    a process that started meanwhile counts from zero."""
    shares = dict.fromkeys(CPU_GROUPS, 0.0)
    for (group, pid), used in after.items():
        shares[group] += (used - before.get((group, pid), 0.0)) / wall
    return shares


def cpu_line(shares: dict[str, float], events: int, wall: float) -> str:
    """'producer 45% (9.1 µs/event), workers ...': share of one core and CPU µs per event."""
    per_event = {g: shares[g] * wall / events * 1e6 if events else 0.0 for g in CPU_GROUPS}
    total = sum(shares.values())
    cells = [f"{g} {shares[g]:.0%} ({per_event[g]:.1f} µs/event)" for g in CPU_GROUPS]
    return (
        ", ".join(cells)
        + f"; together {total:.0%} of one core ({sum(per_event.values()):.1f} µs/event) out of "
        + f"{(os.cpu_count() or 1) * 100}%"
    )


# --- figures --------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/max (and mean) in milliseconds."""
    ordered = sorted(samples_s)
    return {
        "p50": percentile(ordered, 0.50) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (shared), "
        f"load average {load}, Python {sys.version.split()[0]}, code {code_revision()}"
    )


def code_revision() -> str:
    """The commit measured, and the tracked files that differ from it (read-only git calls)."""
    git = ["git", "--no-optional-locks", "-C", str(REPO)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    files = [line[3:] for line in changed if line.strip()]
    return f"{head} + changes to {', '.join(files)}" if files else head
