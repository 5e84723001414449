"""`POST /v1/events`: one event or a batch of up to 10,000, screened and queued.

Each event is completed as a producer would (an id and the time when missing), screened with
the ingest rules (`services.event_intake`: the one event contract, the customer, the plan's
metrics, the accepted window) and, when accepted, queued through `record_usage`, the path every
Python producer takes; the answer waits for the flush, so 202 means queued in the broker. The
answer lists every event's status. Idempotent by event id: sending an event again with its
`event_id` counts it once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.auth import IngestKey
from api.body_limit import read_body
from api.errors import ApiError, responses
from api.schemas import EVENTS_REQUEST, EVENTS_RESPONSE
from pricing.errors import UserError
from pricing.events import Rejection
from services.event_intake import complete, screen
from storage.settings import get_settings

router = APIRouter(prefix="/v1", tags=["events"])

MAX_EVENTS = 10_000
#: How long the answer waits for the accepted events to reach the broker.
FLUSH_TIMEOUT_S = 30.0


@router.post(
    "/events",
    status_code=202,
    summary="Send usage events",
    openapi_extra={"requestBody": EVENTS_REQUEST},
    responses={
        202: {"description": "at least one event was accepted (queued)", **EVENTS_RESPONSE},
        **responses(401, 403, 413, 429),
        422: {"description": "no event was accepted, or the body is not events"},
    },
)
async def send_events(request: Request, key: IngestKey) -> JSONResponse:
    """One event (an object), a batch (an array, or `{"events": [...]}`) of up to 10,000.
    202 when any event was accepted, 422 when none was; `events` gives each one's status:
    `accepted` (queued), `rejected` (with the field and reason), or `duplicate` (its
    customer and `event_id` came earlier in the same request: counted once)."""
    body = await read_body(request, get_settings().METER_API_MAX_BODY_BYTES)
    raw_events = events_of(body)
    document = await run_in_threadpool(accept, raw_events)
    return JSONResponse(document, status_code=202 if document["accepted"] else 422)


def events_of(body: bytes) -> list[Any]:
    """The events a request body holds (ApiError 422 when it holds none)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        try:  # Python's reader also takes what the contract refuses per event (lone surrogates)
            data = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise ApiError(422, "body", f"not JSON: {error}") from None
    if isinstance(data, dict) and set(data) == {"events"}:
        data = data["events"]
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise ApiError(422, "body", 'expected an event object, an array or {"events": [...]}')
    if not data:
        raise ApiError(422, "events", "no events")
    if len(data) > MAX_EVENTS:
        raise ApiError(422, "events", f"at most {MAX_EVENTS} per request, got {len(data)}")
    return data


def accept(raw_events: list[Any]) -> dict[str, Any]:
    """Screen and queue the events; the answer's document."""
    from tasks import flush_usage, record_usage

    now = datetime.now(UTC)
    completed = complete(raw_events, now)
    screening = screen(completed, now)
    statuses: list[dict[str, Any] | None] = [None] * len(completed)
    for position, event in screening.accepted:
        quantity = event.quantity
        record_usage(
            event.customer_id,
            event.metric,
            int(quantity) if quantity == quantity.to_integral_value() else quantity,
            event_id=event.event_id,
            timestamp=event.timestamp,
            properties=event.properties or None,
        )
        statuses[position] = {"index": position, "event_id": event.event_id, "status": "accepted"}
    if screening.accepted and not flush_usage(timeout=FLUSH_TIMEOUT_S):
        raise ApiError(
            503, "broker", "events not queued in time; send them again with the same event_id"
        )
    for rejection in screening.rejected:
        assert rejection.position is not None  # noqa: S101 (invariant for mypy, not validation)
        statuses[rejection.position] = _rejected(rejection)
    for position, status in enumerate(statuses):
        if status is None:  # an event id already seen in this request: counted once
            raw = completed[position]
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            statuses[position] = {"index": position, "event_id": event_id, "status": "duplicate"}
    return {
        "accepted": len(screening.accepted),
        "rejected": len(screening.rejected),
        "events": statuses,
    }


def _rejected(rejection: Rejection) -> dict[str, Any]:
    error = UserError(rejection.detail)
    return {
        "index": rejection.position,
        "event_id": rejection.event_id,
        "status": "rejected",
        "code": rejection.reason,
        "error": {"field": error.field, "reason": error.reason},
    }
