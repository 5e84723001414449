"""Web servers that stop their workers themselves: a real gunicorn (with
examples/gunicorn.conf.py) and a real uvicorn (with `FlushOnShutdown`) serve a tiny app that
records an event per request, one request still in flight when SIGTERM arrives; every event
recorded reaches the broker (the session's own Redis database)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.tasks.test_recorder_process import queued_events

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 40

# Nothing is sent but by a shutdown path: batches never fill, the interval never ends.
WSGI_APP = """
import os, time
from tasks.producer import configure_recorder, record_usage
configure_recorder(flush_interval=3600)

def app(environ, start_response):
    name = environ["PATH_INFO"].strip("/")
    if name.startswith("slow"):  # still running when the server is told to stop
        record_usage("cus_web", "api_calls", event_id=f"{name}-begin")
        open(os.environ["IN_FLIGHT_MARK"], "w").close()
        time.sleep(1.5)
        record_usage("cus_web", "api_calls", event_id=f"{name}-end")
    elif name != "health":
        record_usage("cus_web", "api_calls", event_id=name)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"recorded"]
"""

ASGI_APP = """
import asyncio, os
from tasks.producer import configure_recorder, record_usage
from tasks.shutdown import FlushOnShutdown
configure_recorder(flush_interval=3600)

async def inner(scope, receive, send):
    if scope["type"] != "http":
        return  # speaks no lifespan: FlushOnShutdown speaks it for the app
    name = scope["path"].strip("/")
    if name.startswith("slow"):  # still running when the server is told to stop
        record_usage("cus_web", "api_calls", event_id=f"{name}-begin")
        open(os.environ["IN_FLIGHT_MARK"], "w").close()
        await asyncio.sleep(1.5)
        record_usage("cus_web", "api_calls", event_id=f"{name}-end")
    elif name != "health":
        record_usage("cus_web", "api_calls", event_id=name)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"recorded"})

app = FlushOnShutdown(inner)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=30) as response:
        return int(response.status)


def wait_until_serving(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the server exited"
        try:
            get(port, "health")
            return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_server_stopped_by_sigterm_sends_every_recorded_event(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, server: str
) -> None:
    port = free_port()
    (tmp_path / "webapp.py").write_text(WSGI_APP if server == "gunicorn" else ASGI_APP)
    mark = tmp_path / "in-flight"
    bin_dir = Path(sys.executable).parent
    if server == "gunicorn":
        command = [str(bin_dir / "gunicorn"), "-c", str(REPO_ROOT / "examples/gunicorn.conf.py"),
                   "--chdir", str(tmp_path), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                   "webapp:app"]  # fmt: skip
    else:
        command = [str(bin_dir / "uvicorn"), "--app-dir", str(tmp_path), "--port", str(port),
                   "--lifespan", "on", "--timeout-graceful-shutdown", "20"]  # fmt: skip
        command.append("webapp:app")
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    env.update(REDIS_URL=redis_url, IN_FLIGHT_MARK=str(mark))
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until_serving(process, port)
        assert all(get(port, f"r{i}") == 200 for i in range(REQUESTS))
        in_flight: list[int] = []
        request = threading.Thread(target=lambda: in_flight.append(get(port, "slow")))
        request.start()
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        request.join(timeout=60)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert in_flight == [200]  # a graceful stop: the request in flight was finished
    ids = sorted(e["event_id"] for e in queued_events(redis_client))
    assert ids == sorted([f"r{i}" for i in range(REQUESTS)] + ["slow-begin", "slow-end"]), (
        output.decode(errors="replace")[-3000:]
    )
