"""Real Dramatiq workers against real Redis and PostgreSQL: a worker SIGKILLed between the
ledger commit and the Redis write loses nothing and counts nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import db
from storage.settings import get_settings
from tasks import UsageRecorder
from tasks.broker import make_broker
from tests.metering.helpers import assert_consistent, setup_customer

ROOT = Path(__file__).resolve().parents[2]


def _worker_env() -> dict[str, str]:
    settings = get_settings()
    env = dict(os.environ)
    env["DATABASE_URL"] = str(settings.DATABASE_URL)
    env["REDIS_URL"] = str(settings.REDIS_URL)
    env.pop("BROKER_URL", None)
    # A dead worker's messages come back after 1 s; maintenance runs on every command.
    env["METER_BROKER_HEARTBEAT_TIMEOUT_MS"] = "1000"
    env["METER_BROKER_MAINTENANCE_CHANCE"] = "1000000"
    return env


@contextmanager
def worker(module: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", module, "-p", "1", "-t", "1", "--queues", "ingest"],
        cwd=ROOT,
        env=_worker_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _scalar(sql: str) -> int:
    with db.connection() as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0


@pytest.mark.parametrize("events", [100, 250])
def test_worker_killed_between_commit_and_redis_write(clean_state: None, events: int) -> None:
    """With one batch, only its redelivery can fix the counters; with three, later batches
    find Redis without the first one and must not count it twice either."""
    setup_customer()
    recorder = UsageRecorder(make_broker(), batch_size=100)
    for i in range(events):
        recorder.record("cus_1", "api_calls", 2, event_id=f"k{i}")
    assert recorder.flush(timeout=10)
    recorder.close()

    with worker("tests.metering.fault_worker"):
        # The first batch commits, then its process dies before touching Redis.
        wait_for(lambda: _scalar("SELECT count(*) FROM usage_events") >= 100)
        wait_for(lambda: _scalar("SELECT count(*) FROM ingest_batches") >= 1)
        time.sleep(0.5)
    assert _scalar("SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NULL") >= 1

    with worker("workers.app"):
        # The dead worker's message is redelivered; the rest of the queue is processed.
        wait_for(lambda: _scalar("SELECT count(*) FROM usage_events") == events)
        batches = (events + 99) // 100
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
        wait_for(lambda: _scalar(applied) == batches)
    assert _scalar("SELECT sum(accepted) FROM ingest_batches") == events
    quantities = assert_consistent(require_live=True)
    assert quantities["api_calls"] == 2 * events
