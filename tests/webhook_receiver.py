"""A webhook endpoint for tests: a real HTTP server on 127.0.0.1, in a thread.

It answers with the queued statuses (then 200) and keeps every request it got. `Receiver(up=
False)` holds its port without listening, so a delivery to it is refused ("down") until
`start()`; the URL stays the same.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver(ThreadingHTTPServer):
    def __init__(self, *, up: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.server_bind()  # the port is ours; connections are refused until it listens
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        # While set, requests are recorded (status 0) and left unanswered until it is cleared
        # or the server stops: a receiver that hangs.
        self.hang = threading.Event()
        self._thread: threading.Thread | None = None
        if up:
            self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/meter"

    def start(self) -> None:
        """Listen and serve (the receiver comes up)."""
        self.server_activate()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.hang.clear()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the requests answered with success."""
        with self.lock:
            return [json.loads(body) for _h, body, status in self.requests if 0 < status < 300]

    def wait_for(self, count: int, timeout: float = 30.0, *, answered: bool = True) -> bool:
        """Wait until `count` requests were answered with success (or, `answered=False`, have
        arrived at all); False: timed out."""
        with self.arrived:
            return self.arrived.wait_for(
                lambda: (
                    sum(1 for *_r, status in self.requests if not answered or 0 < status < 300)
                    >= count
                ),
                timeout=timeout,
            )


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.hang.is_set():
            with self.server.lock:
                self.server.requests.append((dict(self.headers.items()), body, 0))
                self.server.arrived.notify_all()
            while self.server.hang.is_set():
                time.sleep(0.05)
            return  # no answer at all: the connection closes
        with self.server.lock:
            status = self.server.statuses.pop(0) if self.server.statuses else 200
            self.server.requests.append((dict(self.headers.items()), body, status))
            self.server.arrived.notify_all()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver(*, up: bool = True) -> Iterator[Receiver]:
    server = Receiver(up=up)
    try:
        yield server
    finally:
        server.stop()
