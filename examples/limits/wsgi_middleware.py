"""A WSGI middleware that meters each request and refuses one past a limit with 429.

    from examples.limits.wsgi_middleware import LimitMiddleware
    app = LimitMiddleware(app, metric="api_calls")          # Flask: app.wsgi_app = ...

The customer comes from the `X-Customer-Id` header here (use your API key lookup instead).
A request `check_limit` refuses gets `429 Too Many Requests` with `Retry-After` (seconds to the
period's end) and is not recorded (it was not served); a served one is recorded with
`record_usage`, and `X-Usage-Throttle: 1` tells the client to slow down past `throttle_at`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from tasks import check_limit, record_usage

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def refusal(decision: Any) -> tuple[str, list[tuple[str, str]], bytes]:
    """The 429 response for a refused check: status, headers, body."""
    body = json.dumps({"error": "limit_reached", **decision.to_json()}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Retry-After", str(decision.retry_after(datetime.now(UTC)))),
    ]
    return "429 Too Many Requests", headers, body


class LimitMiddleware:
    def __init__(self, app: WSGIApp, *, metric: str = "api_calls", quantity: int = 1) -> None:
        self.app = app
        self.metric = metric
        self.quantity = quantity

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        customer_id = environ.get("HTTP_X_CUSTOMER_ID")
        if not customer_id:
            return self.app(environ, start_response)
        decision = check_limit(customer_id, self.metric, self.quantity)
        if not decision.allowed:
            status, headers, body = refusal(decision)
            start_response(status, headers)
            return [body]
        record_usage(customer_id, self.metric, self.quantity)
        if not decision.throttle:
            return self.app(environ, start_response)

        def throttled(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [*headers, ("X-Usage-Throttle", "1")], *rest)

        return self.app(environ, throttled)
