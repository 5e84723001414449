"""Every error the API answers, in one JSON shape: `{"error": {"field": ..., "reason": ...}}`.

Errors the user can fix (`UserError`) keep their field and reason; a missing row is a 404, a
conflict a 409. Anything else is a bug: it is logged with its traceback here and answered with
a bare 500 that says nothing about the inside (no traceback, no ids).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pricing.errors import UserError
from storage.errors import Conflict, NotFound

log = logging.getLogger(f"meterline.{__name__}")


class ApiError(Exception):
    """An answer with an error status: `ApiError(403, "scope", "this key cannot ...")`."""

    def __init__(
        self, status: int, field: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.field = field
        self.reason = reason
        self.headers = headers


def error_body(field: str, reason: str) -> dict[str, Any]:
    return {"error": {"field": field, "reason": reason}}


def error_response(
    status: int, field: str, reason: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(field, reason), status_code=status, headers=headers)


#: The OpenAPI description of an error answer, for the routes' `responses`.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["field", "reason"],
            "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
        }
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these error statuses, each with the error shape."""
    words = {
        401: "missing or wrong API key",
        403: "the key's scope does not allow this",
        404: "not found",
        409: "conflict",
        413: "request body too large",
        422: "invalid input",
        429: "too many requests (see Retry-After)",
    }
    return {
        status: {
            "description": words.get(status, "error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status in statuses
    }


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.field, exc.reason, exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, exc.field, exc.reason)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, exc.field, exc.reason)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return error_response(422, exc.field, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
        return error_response(422, ".".join(where[-1:]), str(first.get("msg", "invalid")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = "path" if exc.status_code in (404, 405) else ""
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, field, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "", "internal error")
