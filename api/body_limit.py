"""A limit on request bodies (METER_API_MAX_BODY_BYTES): a larger one is refused with 413
before it is read whole. `BodyLimit` refuses a declared Content-Length at once; `read_body`
counts a streamed (chunked) body as it arrives."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, error_body


class BodyLimit:
    """ASGI middleware: 413 `{"error": {"field": "body", ...}}` for a Content-Length over
    `max_bytes`, before the application sees the request."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope.get("headers", [])).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_bytes:
                payload = json.dumps(error_body("body", _reason(self.max_bytes))).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or ApiError 413 as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            raise ApiError(413, "body", _reason(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(max_bytes: int) -> str:
    return f"larger than {max_bytes} bytes (METER_API_MAX_BODY_BYTES)"
