"""Refuse a NUL character in the path or the query string with a 422 before any route runs.

PostgreSQL text cannot hold NUL (psycopg raises `DataError`), so a `?plan=%00` or an id with a
NUL would otherwise reach the database and come back as a bare 500. No id, code or option of
Meterline may contain one (the event contract refuses it too), so this is a user error,
answered in the API's one error shape and naming the parameter.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body

REASON = "must not contain a NUL character"


def nul_field(path: str, query_string: bytes) -> str | None:
    """The name of the first query parameter (or "path") holding a NUL, else None."""
    if "\x00" in path:
        return "path"
    if b"%00" not in query_string.lower() and b"\x00" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "") or "query"
    return None


class NulGuard:
    """ASGI middleware: 422 `{"error": {"field": <parameter>, "reason": ...}}` for a NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = nul_field(scope.get("path", ""), scope.get("query_string", b""))
            if field is not None:
                body = json.dumps(error_body(field, REASON)).encode()
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 422, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
