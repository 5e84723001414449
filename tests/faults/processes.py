"""Real processes for fault tests: `meter worker`-equivalent Dramatiq workers in their own
process group (so a kill reaches every child), waits with a bound, and one-number SQL reads.

Shared by every test that kills or stops something (tests/faults, tests/metering,
tests/alerts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from storage import db
from storage.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def worker_env(**overrides: str) -> dict[str, str]:
    """The session's servers, and a broker that requeues a dead worker's messages after 1 s
    (maintenance on every command) instead of 60 s."""
    settings = get_settings()
    env = dict(os.environ)
    env["DATABASE_URL"] = str(settings.DATABASE_URL)
    env["REDIS_URL"] = str(settings.REDIS_URL)
    env.pop("BROKER_URL", None)
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
        stderr=subprocess.DEVNULL,
    )


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


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def scalar(sql: str) -> int:
    with db.connection() as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0
