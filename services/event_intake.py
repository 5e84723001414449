"""Events that arrive over HTTP: complete them as a producer would, and screen them with the
ingest rules before they are queued.

An event without an `event_id` gets one, and one without a `timestamp` gets `now`, as
`record_usage` does. `screen` asks the ingest rules (`services.ingest.screen`: the event
contract, the customer, the plan's metrics, the accepted window) about every event, so a refused
one is answered at once with its field and reason rather than becoming a rejected row later.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pricing.events import Event, Rejection
from services import ingest


@dataclass(frozen=True)
class Screening:
    """Per position of the request: an event ingest would accept now, why it would not, or
    (neither) a repeat of an earlier event of the request, which ingest would count once."""

    accepted: list[tuple[int, Event]]
    rejected: list[Rejection]


def complete(raw_events: Sequence[object], now: datetime) -> list[object]:
    """The events with an `event_id` and a `timestamp` each; anything that is not an event
    object is left as it is (the contract refuses it)."""
    prefix = f"http-{secrets.token_hex(8)}"
    stamp = now.isoformat()
    completed: list[object] = []
    for position, raw in enumerate(raw_events):
        if isinstance(raw, dict) and ("event_id" not in raw or "timestamp" not in raw):
            raw = dict(raw)
            raw.setdefault("event_id", f"{prefix}-{position}")
            raw.setdefault("timestamp", stamp)
        completed.append(raw)
    return completed


def screen(raw_events: Sequence[object], now: datetime) -> Screening:
    """What ingest would do with each (completed) event: accept it or reject it, and why."""
    accepted, rejected = ingest.screen(raw_events, now=now)
    return Screening(accepted, rejected)
