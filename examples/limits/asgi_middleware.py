"""An ASGI middleware (Starlette, FastAPI, any ASGI app) that meters each HTTP request and
refuses one past a limit with 429; the same rules as `wsgi_middleware`.

    from examples.limits.asgi_middleware import LimitMiddleware
    app = LimitMiddleware(app, metric="api_calls")

`check_limit` makes one Redis round trip: it runs in a worker thread so that the event loop
never waits on the network; `record_usage` only appends to a buffer and runs inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from examples.limits.wsgi_middleware import refusal
from tasks import check_limit, record_usage

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LimitMiddleware:
    def __init__(self, app: ASGIApp, *, metric: str = "api_calls", quantity: int = 1) -> None:
        self.app = app
        self.metric = metric
        self.quantity = quantity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or ()) if scope["type"] == "http" else {}
        raw = headers.get(b"x-customer-id")
        if not raw:
            await self.app(scope, receive, send)
            return
        customer_id = raw.decode("latin-1")
        decision = await asyncio.to_thread(check_limit, customer_id, self.metric, self.quantity)
        if not decision.allowed:
            status, response_headers, body = refusal(decision)
            await send(
                {
                    "type": "http.response.start",
                    "status": int(status.split()[0]),
                    "headers": [(k.lower().encode(), v.encode()) for k, v in response_headers],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        record_usage(customer_id, self.metric, self.quantity)
        if not decision.throttle:
            await self.app(scope, receive, send)
            return

        async def throttled(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-usage-throttle", b"1")],
                }
            await send(message)

        await self.app(scope, receive, throttled)
