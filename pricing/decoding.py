"""Decoding a batch of JSON events under the contract (`pricing.events`), in one call.

msgspec converts the whole batch to `Event`s in C (shape, types, lengths); one Python pass per
event then checks what msgspec cannot express (`finish`). msgspec stops at the first error of
a batch, so a batch that fails is decoded again one event at a time: the good events are kept
and every bad one gets its reason, worded by the contract and naming the field. The worker
(`services.ingest`) and the CLI (`meter events import|send`, `meter quote --events`) decode
here; the producer checks Python values with the same rules (`pricing.events.check_*`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

import msgspec

from pricing.events import (
    DEFAULT_QUANTITY,
    EVENT_KEYS,
    REQUIRED_KEYS,
    Event,
    EventError,
    Rejection,
    checked_number,
    id_reason,
    properties_problem,
    property_problem,
    shown,
    text_problem,
    utc_timestamp,
)
from pricing.fields import TIMESTAMP_EXAMPLE
from pricing.money import parse_decimal

_BATCH = list[Event]
_FIELD = re.compile(r"`\$\.(\w+)")


def decode_batch(raw: Sequence[object]) -> tuple[list[Event], list[Rejection]]:
    """The events of a batch that meet the contract, and a `Rejection` (reason
    `invalid_event`, detail `field: reason`, its position) for each one that does not."""
    try:
        events = msgspec.convert(raw, _BATCH)
    except (msgspec.ValidationError, UnicodeEncodeError):  # a key msgspec cannot encode
        return _one_by_one(raw)  # msgspec names only the first error: find every one
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    for position, event in enumerate(events):
        problem = finish(event)
        if problem is None:
            accepted.append(event)
        else:
            rejected.append(Rejection("invalid_event", problem, raw[position], position))
    return accepted, rejected


def decode_event(raw: object) -> Event:
    """One event under the contract; EventError with every reason found otherwise."""
    found = _check_one(raw)
    if isinstance(found, list):
        raise EventError([(reason.split(":", 1)[0], reason) for reason in found])
    return found


_checked_quantities: dict[str, Decimal | str] = {}


def finish(event: Event) -> str | None:
    """Check what msgspec does not, in place (quantity made exact, timestamp to UTC); the
    first problem as `field: reason`, or None. Plain ASCII needs no text check: NUL and lone
    surrogates are the only characters the stores refuse."""
    a, b, c = event.event_id, event.customer_id, event.metric
    if not (a.isascii() and b.isascii() and c.isascii()) or "\x00" in a + b + c:
        for name, text in (("event_id", a), ("customer_id", b), ("metric", c)):
            if problem := text_problem(text):
                return f"{name}: {problem}"
    quantity = event.quantity
    if quantity is not DEFAULT_QUANTITY:  # the default needs no check
        # A batch repeats a few quantities: each text (one sign, coefficient and exponent) is
        # checked once; the outcome is the same Decimal (immutable) or the same reason.
        text = str(quantity)
        checked = _checked_quantities.get(text)
        if checked is None:
            try:
                checked = checked_number(quantity)
            except ValueError as error:
                checked = f"quantity: {error}, got {shown(quantity)}"
            if len(_checked_quantities) >= 4096:
                _checked_quantities.clear()
            _checked_quantities[text] = checked
        if isinstance(checked, str):
            return checked
        event.quantity = checked
    if event.timestamp.tzinfo is not UTC:
        try:
            event.timestamp = utc_timestamp(event.timestamp)
        except ValueError as error:
            return f"timestamp: {error}"
    for key, value in event.properties.items():
        if problem := property_problem(key, value):
            return problem
    return None


def _one_by_one(raw: Sequence[object]) -> tuple[list[Event], list[Rejection]]:
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    for position, item in enumerate(raw):
        found = _check_one(item)
        if isinstance(found, list):
            rejected.append(Rejection("invalid_event", "; ".join(found), item, position))
        else:
            accepted.append(found)
    return accepted, rejected


def _check_one(item: object) -> Event | list[str]:
    """The event, or its reasons (`field: reason` each)."""
    if not isinstance(item, dict):
        return [f"event: expected an object, got {type(item).__name__}"]
    try:
        event = msgspec.convert(item, Event)
    except (msgspec.ValidationError, UnicodeEncodeError) as error:
        return _explain(item, str(error))
    problem = finish(event)
    return event if problem is None else [problem]


def _explain(item: Mapping[str, Any], message: str) -> list[str]:
    """msgspec's error for one event, in the contract's words (`field: reason`), with every
    missing or unknown key at once."""
    unknown = [f"{key}: unknown key" for key in item if key not in EVENT_KEYS]
    missing = [f"{key}: required" for key in REQUIRED_KEYS if key not in item]
    if unknown or missing:
        return missing + unknown
    match = _FIELD.search(message)
    field = match.group(1) if match else _unstorable_field(item)
    value = item.get(field)
    if field in ("event_id", "customer_id", "metric"):
        return [f"{field}: {id_reason(value)}"]
    if field == "quantity":
        return [f"quantity: {_quantity_reason(value)}"]
    if field == "timestamp":
        return [f"timestamp: {_timestamp_reason(value, message)}"]
    if field == "properties":
        return [properties_problem(value) or f"properties: {message}"]
    return [f"event: {message}"]


def _unstorable_field(item: Mapping[str, Any]) -> str:
    """The field holding text msgspec could not even read (a lone surrogate in a key)."""
    for field in EVENT_KEYS:
        value = item.get(field)
        if isinstance(value, str) and text_problem(value):
            return field
        if isinstance(value, Mapping) and properties_problem(value):
            return field
    return ""


def _quantity_reason(value: object) -> str:
    try:
        parse_decimal(value)
    except ValueError as error:
        return str(error)
    return f"must be a number, got {shown(value)}"


def _timestamp_reason(value: object, message: str) -> str:
    if "timezone" in message:  # read, but without an offset
        return f"must include a UTC offset ({TIMESTAMP_EXAMPLE}), got {shown(value)}"
    if not isinstance(value, str):
        return f"must be an RFC 3339 timestamp string ({TIMESTAMP_EXAMPLE}), got {shown(value)}"
    return f"not an RFC 3339 timestamp ({TIMESTAMP_EXAMPLE}): {shown(value)}"
