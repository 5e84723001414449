"""The example middlewares: a real HTTP request through a WSGI server and through uvicorn;
served requests are recorded, a refused one gets 429 with Retry-After."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn
from dramatiq.brokers.stub import StubBroker

from examples.limits.asgi_middleware import LimitMiddleware as AsgiLimits
from examples.limits.wsgi_middleware import LimitMiddleware as WsgiLimits
from services.overrides import set_overrides
from storage.catalog.limits import OverrideChange
from tasks.ingest import ingest_events
from tasks.recorder import UsageRecorder
from tests.limits.helpers import setup_capped
from tests.metering.helpers import batch, event


@pytest.fixture(autouse=True)
def customer(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[UsageRecorder]:
    monkeypatch.setattr("tasks.ingest.request_invoice_refresh", lambda *args: None)
    setup_capped()
    set_overrides("cus_1", OverrideChange(spend_cap=Decimal(1000)))
    ingest_events(batch([event(quantity=298)]))  # the plan's hard limit is 300
    recorder = UsageRecorder(StubBroker(), flush_interval=3600, batch_size=100_000)
    monkeypatch.setattr("tasks.producer._default", recorder)
    yield recorder
    recorder.close(timeout=5)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"X-Customer-Id": "cus_1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def hello_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


async def hello_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def wsgi_server() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, WsgiLimits(hello_wsgi), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def asgi_server() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(AsgiLimits(hello_asgi), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            thread.join(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("serve", [wsgi_server, asgi_server], ids=["wsgi", "asgi"])
def test_requests_are_recorded_until_the_limit_then_429(
    serve: Callable[[], Any], customer: UsageRecorder
) -> None:
    with serve() as url:
        first = get(url)  # 299
        second = get(url)  # 300: exactly the limit
        refused = get(url)  # 301: over it (the two served ones are still only buffered)
    assert (first[0], first[2], second[0]) == (200, b"hello", 200)
    assert first[1].get("X-Usage-Throttle", first[1].get("x-usage-throttle")) == "1"
    status, headers, body = refused
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    document = json.loads(body)
    assert (document["reason"], document["used"], document["limit"]) == ("hard_limit", "300", "300")
    assert customer.pending("cus_1", "api_calls").count == 2  # the 429 is not usage
