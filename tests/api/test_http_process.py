"""End to end over the network: `meter web` (uvicorn, 2 worker processes) in its own process
group, a real Dramatiq worker, the session's PostgreSQL and Redis. Events sent over HTTP, some
twice and some bad, are found in the counters and the ledger exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services import api_keys
from services.usage import current_usage
from storage import db
from tests.conftest import SessionServers
from tests.metering.helpers import setup_customer

ROOT = Path(__file__).resolve().parents[2]
_METER = "import sys; from cli.main import main; sys.argv = ['meter', *sys.argv[1:]]; main()"


def _env(servers: SessionServers) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=servers.database_url,
        REDIS_URL=servers.redis_url,
        BROKER_URL=servers.redis_url,
        METER_DATA_DIR=servers.data_dir,
    )
    return env


@contextmanager
def started(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ledger(customer_id: str) -> tuple[int, Decimal]:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(quantity), 0) FROM usage_events WHERE customer_id = %s",
            (customer_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), Decimal(row[1])


@pytest.mark.slow
def test_events_over_http_are_counted_exactly(
    clean_state: None, test_servers: SessionServers
) -> None:
    setup_customer("cus_http")
    _, key = api_keys.create("ingest")
    _, reader = api_keys.create("customer:cus_http")
    env = _env(test_servers)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = [sys.executable, "-c", _METER, "web", "--port", str(port), "--workers", "2"]
    worker = [sys.executable, "-m", "dramatiq", "workers.app", "-p", "1", "-t", "2"]
    with started(web, env), started(worker, env):
        wait_for(lambda: _up(base))
        batches = [
            [
                {"event_id": f"b{b}-{i}", "customer_id": "cus_http", "metric": "api_calls",
                 "quantity": str(i % 7 + 1)}
                for i in range(1000)
            ]
            for b in range(6)
        ]  # fmt: skip
        expected = sum(int(e["quantity"]) for batch in batches for e in batch)
        bad = [{"customer_id": "cus_http", "metric": "api_calls", "quantity": "NaN"}]
        sends = [*batches, batches[0], batches[3], bad + batches[5][:10]]  # repeats count once
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

            def send(events: list[dict[str, str]]) -> httpx.Response:
                return client.post("/v1/events", json={"events": events})

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(send, sends))
        assert [a.status_code for a in answers] == [202] * len(sends)
        assert answers[-1].json()["events"][0]["status"] == "rejected"
        assert sum(a.json()["accepted"] for a in answers) == 6000 + 2000 + 10

        wait_for(lambda: _ledger("cus_http") == (6000, Decimal(expected)))
        usage = httpx.get(
            f"{base}/v1/customers/cus_http/usage",
            headers={"Authorization": f"Bearer {reader}"},
            timeout=30,
        )
        assert usage.status_code == 200
        assert Decimal(usage.json()["metrics"]["api_calls"]["used"]) == expected
        assert current_usage("cus_http").metrics["api_calls"].used == expected
        time.sleep(1)  # nothing arrives late: a repeat would show here
        assert _ledger("cus_http") == (6000, Decimal(expected))
