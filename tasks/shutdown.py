"""Send the recorders' buffered events before the process stops.

A recorder buffers events in memory for at most one flush interval (200 ms by default); an exit
that skips the flush loses them. `atexit` covers a normal exit, but not SIGTERM: Python's default
action for it (what systemd, Docker and Kubernetes send to stop a process) ends the process
without running `atexit`. So:

- The first recorder to start installs a SIGTERM handler, if it starts in the main thread (only
  the main thread may install one; `install_sigterm_handler()` does it explicitly). The handler
  sends what is buffered (at most `SIGTERM_FLUSH_TIMEOUT` seconds), then does what SIGTERM did
  before: the default action ends the process with the same status as before, an ignored signal
  stays ignored, a handler the host application installed is called.
- Servers that stop their workers themselves get hooks: gunicorn's `worker_exit`
  (`gunicorn_worker_exit`, see examples/gunicorn.conf.py) and, for ASGI servers such as uvicorn,
  the lifespan shutdown (`FlushOnShutdown(app)` or `await flush_recorders_async()`).

SIGKILL cannot be caught: a killed process loses what it had buffered.

A signal handler runs in the main thread between two bytecodes, maybe while that thread holds a
lock that the recorder's sender thread needs: flushing then would wait for itself. Recorder code
that holds such a lock in the main thread runs inside `main_thread_section()`; a SIGTERM that
lands there is handled as the main thread leaves the section. A SIGTERM that lands while the
handler flushes is handled (chained) after that flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from types import FrameType
from typing import Any

log = logging.getLogger(f"meterline.{__name__}")

SIGTERM_FLUSH_TIMEOUT = 5.0  # seconds; leaves room in `docker stop`'s 10 s before its SIGKILL
SHUTDOWN_FLUSH_TIMEOUT = 10.0  # seconds, for the servers' shutdown hooks

Handler = Callable[[int, FrameType | None], Any] | int | None

_busy = 0  # depth of recorder sections the main thread is in (it may hold a lock there)
_pending = 0  # SIGTERMs received and not yet passed on
_flushing = False
_previous: Handler = signal.SIG_DFL  # what SIGTERM did before our handler
_frame: FrameType | None = None


def _reset_in_child() -> None:
    """A forked child's main thread is the thread that forked: it is in no section."""
    global _busy, _pending, _flushing
    _busy, _pending, _flushing = 0, 0, False


os.register_at_fork(after_in_child=_reset_in_child)


def _flush_all(timeout: float) -> bool:
    from tasks.recorder import flush_all_recorders  # imported by then: only recorders call us

    return flush_all_recorders(timeout)


@contextlib.contextmanager
def main_thread_section() -> Iterator[None]:
    """Around recorder code that may hold a lock the sender thread needs: in the main thread,
    a SIGTERM that lands inside is handled when the section ends."""
    global _busy
    if threading.get_ident() != threading.main_thread().ident:
        yield
        return
    _busy += 1
    try:
        yield
    finally:
        _busy -= 1
        if not _busy and _pending and not _flushing:
            _flush_then_chain()


def install_sigterm_handler() -> bool:
    """Make SIGTERM send the buffered events first. Only the main thread can install a signal
    handler: elsewhere this does nothing and returns False. A handler installed outside Python
    (which could not be chained) is left alone. Idempotent."""
    global _previous
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return True
    if current is None:
        return False
    _previous = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _pending, _frame
    _pending += 1
    _frame = frame
    if _busy or _flushing:  # the section's end, or the flush in progress, passes it on
        return
    _flush_then_chain()


def _flush_then_chain() -> None:
    global _flushing, _pending, _frame
    _flushing = True  # until every pending SIGTERM is passed on: a host handler may record
    try:
        if not _flush_all(SIGTERM_FLUSH_TIMEOUT):
            log.error("SIGTERM: events still unsent after %.1fs; they are lost if the process "
                      "stops now", SIGTERM_FLUSH_TIMEOUT)  # fmt: skip
        frame, _frame = _frame, None
        while _pending:
            _pending -= 1
            _chain(frame)
    finally:
        _flushing = False


def _chain(frame: FrameType | None) -> None:
    previous = _previous
    if previous == signal.SIG_IGN:
        return
    if previous == signal.SIG_DFL or previous is None:
        # The default action, raised again, so the exit status says "terminated by SIGTERM".
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)  # only reached if SIGTERM is blocked
        return
    if callable(previous):
        previous(signal.SIGTERM, frame)


# --- servers that run the shutdown themselves ------------------------------------------------


def gunicorn_worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's `worker_exit` hook, in gunicorn.conf.py:
    ``from tasks.shutdown import gunicorn_worker_exit as worker_exit``.

    gunicorn calls it in the worker process on every way out that it controls: a graceful stop
    (SIGTERM, after the requests in flight finish), a quick stop (SIGINT/SIGQUIT), a timed-out
    worker (SIGABRT), `max_requests`. Only its final SIGKILL (after `graceful_timeout`) skips it.
    """
    if not _flush_all(SHUTDOWN_FLUSH_TIMEOUT):
        log.error("gunicorn worker exit: events still unsent after %.1fs", SHUTDOWN_FLUSH_TIMEOUT)


async def flush_recorders_async(timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> bool:
    """Send every recorder's buffered events without blocking the event loop; for an ASGI
    app's lifespan shutdown (FastAPI: after the `yield` of its `lifespan`)."""
    return await asyncio.to_thread(_flush_all, timeout)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FlushOnShutdown:
    """ASGI middleware: at lifespan shutdown, once the app's own shutdown is done (and the
    server has finished the requests in flight), send every recorder's buffered events.

    uvicorn stops on SIGTERM by running the lifespan shutdown, then raises SIGTERM again with
    the handler that was there before it started, usually the default one, which skips
    `atexit`: this is the last moment to send. An app that does not speak the lifespan
    protocol gets it spoken for it.

    Parameters:
      app: the ASGI application.
      timeout: seconds the shutdown waits for the events to be sent.
    """

    def __init__(self, app: ASGIApp, *, timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        received: list[str] = []
        answered = False

        async def receive_tracked() -> Message:
            message = await receive()
            received.append(message["type"])
            return message

        async def send_after_flush(message: Message) -> None:
            nonlocal answered
            answered = True
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await flush_recorders_async(self.timeout)
            await send(message)

        try:
            await self.app(scope, receive_tracked, send_after_flush)
        except Exception:
            if answered:
                raise
        if not answered:  # the app ignores lifespan: answer for it
            await self._lifespan_alone(receive, send, started="lifespan.startup" in received)

    async def _lifespan_alone(self, receive: Receive, send: Send, *, started: bool) -> None:
        if not started:
            await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await flush_recorders_async(self.timeout)
        await send({"type": "lifespan.shutdown.complete"})
