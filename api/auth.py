"""Who is asking: the API key of a request, its scope, and its rate limit.

A key comes as `Authorization: Bearer KEY` (or `X-API-Key: KEY`; the dashboards keep it in an
HTTP-only cookie). Missing, malformed, unknown, wrong or revoked: 401, with the same words for
each, so an answer never tells which. A scope that does not allow the call: 403, naming no
other customer. Over METER_API_RATE_LIMIT requests in a minute: 429 with Retry-After.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from services import api_keys
from services.api_keys import ApiKey, id_problem

#: The cookie the dashboards keep the key in (HTTP-only, same site).
COOKIE = "meterline_key"

bearer = HTTPBearer(
    auto_error=False, description="An API key from `meter api-keys create --scope ...`."
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def key_text(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None:
        return credentials.credentials
    return request.headers.get("x-api-key") or request.cookies.get(COOKIE)


def api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """The request's live key (401 otherwise), counted against its rate limit (429)."""
    text = key_text(request, credentials)
    if not text:
        raise ApiError(
            401, "authorization", "missing API key (Authorization: Bearer KEY)", _CHALLENGE
        )
    key = api_keys.authenticate(text)
    if key is None:
        raise ApiError(401, "authorization", "unknown or revoked API key", _CHALLENGE)
    wait = api_keys.retry_after(key, time.time())
    if wait is not None:
        raise ApiError(
            429, "", f"rate limit: too many requests for this key; retry in {wait} s",
            {"Retry-After": str(wait)},
        )  # fmt: skip
    request.state.api_key = key
    return key


AnyKey = Annotated[ApiKey, Depends(api_key)]


def ops_key(key: AnyKey) -> ApiKey:
    if key.scope != "ops":
        raise ApiError(403, "scope", "this needs an ops key")
    return key


def ingest_key(key: AnyKey) -> ApiKey:
    if not api_keys.may_ingest(key):
        raise ApiError(403, "scope", "sending events needs an ingest or ops key")
    return key


def path_id(field: str, value: str) -> str:
    """An id from the path, held to the ids' rules (length, no NUL): 422 otherwise."""
    problem = id_problem(value)
    if problem is not None:
        raise ApiError(422, field, problem)
    return value


def reader(customer_id: str, key: AnyKey) -> ApiKey:
    """A key that may read `customer_id` (the path's customer)."""
    path_id("customer_id", customer_id)
    if not api_keys.may_read(key, customer_id):
        raise ApiError(403, "scope", "this key cannot read this customer")
    return key


def limit_reader(customer_id: str, key: AnyKey) -> ApiKey:
    path_id("customer_id", customer_id)
    if not api_keys.may_check_limits(key, customer_id):
        raise ApiError(403, "scope", "this key cannot read this customer")
    return key


OpsKey = Annotated[ApiKey, Depends(ops_key)]
IngestKey = Annotated[ApiKey, Depends(ingest_key)]
ReaderKey = Annotated[ApiKey, Depends(reader)]
LimitKey = Annotated[ApiKey, Depends(limit_reader)]
