"""Real processes for fault tests: `meter worker`-equivalent Dramatiq workers in their own
process group (so a kill reaches every child), waits with a bound, and one-number SQL reads.

Shared by every test that kills or stops something (tests/faults, tests/metering,
tests/alerts)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from storage import db
from storage.embedded import broker_url
from storage.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def worker_env(**overrides: str) -> dict[str, str]:
    """The session's servers, and a broker that requeues a dead worker's messages after 1 s
    (maintenance on every command) instead of 60 s."""
    settings = get_settings()
    env = dict(os.environ)
    env["DATABASE_URL"] = str(settings.DATABASE_URL)
    env["REDIS_URL"] = str(settings.REDIS_URL)
    env["BROKER_URL"] = broker_url()  # the broker this process's `make_broker()` sends to
    env["METER_BROKER_HEARTBEAT_TIMEOUT_MS"] = "1000"
    env["METER_BROKER_MAINTENANCE_CHANCE"] = "1000000"
    env.update(overrides)
    return env


def start_worker(
    module: str = "workers.app",
    *,
    processes: int = 1,
    threads: int = 1,
    queues: tuple[str, ...] = ("ingest",),
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`meter worker` (for `workers.app`; else `dramatiq MODULE`, a fault-injecting variant)
    as the leader of a new process group; `queues=()`: every queue."""
    counts = ["-p", str(processes), "-t", str(threads)]
    if module == "workers.app":
        command = [str(Path(sys.executable).with_name("meter")), "worker", *counts]
        command += [arg for queue in queues for arg in ("-Q", queue)]
    else:
        command = [sys.executable, "-m", "dramatiq", module, *counts]
        command += ["--queues", *queues] if queues else []
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(env) if env is not None else worker_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=_log_file(),
    )


def _log_file() -> int | IO[bytes]:
    """Where workers write their log: METER_TEST_WORKER_LOG (a file, appended) or nowhere."""
    path = os.environ.get("METER_TEST_WORKER_LOG")
    return open(path, "ab") if path else subprocess.DEVNULL


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (Dramatiq's clean stop), SIGKILL it if that takes over 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group: the parent and every worker process, no clean-up."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def worker(module: str, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(module, **kwargs)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        stop_worker(process)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s: {ingest_state()}")


def ingest_state() -> str:
    """Where ingest stands (for a failure message): events, batches, batches not yet counted."""
    try:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM usage_events), count(*),"
                " count(*) FILTER (WHERE counters_applied_at IS NULL) FROM ingest_batches"
            ).fetchone()
    except Exception as exc:  # the database may be the thing that is down
        return f"(ingest state unknown: {type(exc).__name__})"
    assert row is not None
    return f"{row[0]} events in the ledger, {row[1]} batches, {row[2]} without counters"


def scalar(sql: str) -> int:
    with db.connection() as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0


def free_port(*, also_free: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now; with `also_free`, one whose
    port + `also_free` is free too (a Redis Cluster node's bus port is its port + 10000)."""
    if also_free is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20_000, 65_535 - also_free)
        if all(_is_free(candidate) for candidate in (port, port + also_free)):
            return port
    raise RuntimeError("no free pair of ports")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
