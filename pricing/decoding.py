"""Decoding a batch of JSON events under the contract (`pricing.events`), in one call.

msgspec converts the whole batch to `Event`s in C (shape, types, lengths); one Python pass per
event then checks what msgspec cannot express (`finish`). msgspec stops at the first error of
a batch, so a batch that fails is decoded again one event at a time: the good events are kept
and every bad one gets its reason, worded by the contract and naming the field. The worker
(`services.ingest`) and the CLI (`meter events import|send`, `meter quote --events`) decode
here; the producer checks Python values with the same rules (`pricing.events.check_*`).

The worker's message decoder leaves a batch's events as their JSON text (`EventsJSON`): they are
then decoded straight from it into `Event`s, with no dict per event in between, and a number is
read exactly as written (a `quantity` of `0.1000000000000000055` is that decimal, not a float's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
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
_BATCH_JSON = msgspec.json.Decoder(_BATCH)
_EVENT_JSON = msgspec.json.Decoder(Event)
_ITEMS_JSON = msgspec.json.Decoder(list[msgspec.Raw])


class EventsJSON:
    """A batch's events as the JSON array they arrived in, not decoded yet (`raw`), and how to
    read that text as plain values (`read`: the message decoder's, which keeps what it can of
    text that is not UTF-8 or numbers too long to convert), for what needs the values
    themselves: an event's rejection payload, a content digest, a log line."""

    __slots__ = ("_items", "raw", "read")

    def __init__(self, raw: msgspec.Raw, read: Callable[[bytes], Any]) -> None:
        self.raw = raw
        self.read = read
        self._items: list[Any] | None = None

    def items(self) -> list[Any]:
        """The events as plain values (decoded once; a JSON array of anything)."""
        if self._items is None:
            items = self.read(bytes(self.raw))
            self._items = items if isinstance(items, list) else [items]
        return self._items

    def __repr__(self) -> str:
        return f"EventsJSON({len(self.raw)} bytes)"


def decode_batch(raw: Sequence[object] | EventsJSON) -> tuple[list[Event], list[Rejection]]:
    """The events of a batch that meet the contract, and a `Rejection` (reason
    `invalid_event`, detail `field: reason`, its position) for each one that does not."""
    try:
        if isinstance(raw, EventsJSON):
            events = _BATCH_JSON.decode(raw.raw)
        else:
            events = msgspec.convert(raw, _BATCH)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeEncodeError):
        # msgspec names only the first error: find every one (a key msgspec cannot encode,
        # text that is not UTF-8, ...)
        return _one_by_one(raw)
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    # Text that is ASCII without `\u` escapes holds no NUL and no surrogate: then an event in
    # UTC without properties needs only its quantity's checked value, cached (finish's checks,
    # inline; anything else, or a quantity not seen yet, goes through finish).
    plain = isinstance(raw, EventsJSON) and _plain_text(raw.raw)
    checked_quantities = _checked_quantities
    for position, event in enumerate(events):
        if plain and not event.properties and event.timestamp.tzinfo is UTC:
            quantity = event.quantity
            if quantity is DEFAULT_QUANTITY:
                accepted.append(event)
                continue
            checked = checked_quantities.get(str(quantity))
            if type(checked) is Decimal:
                event.quantity = checked
                accepted.append(event)
                continue
        problem = finish(event)
        if problem is None:
            accepted.append(event)
        else:
            payload = raw.items()[position] if isinstance(raw, EventsJSON) else raw[position]
            rejected.append(Rejection("invalid_event", problem, payload, position))
    return accepted, rejected


def _plain_text(text: msgspec.Raw) -> bool:
    """True when every string in this JSON is ASCII without NUL (and so without surrogates):
    ASCII bytes without a `\\u` escape (an escaped backslash before a `u` is a false alarm)."""
    data = bytes(text)
    return data.isascii() and b"\\u" not in data


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


def _one_by_one(raw: Sequence[object] | EventsJSON) -> tuple[list[Event], list[Rejection]]:
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    texts: Sequence[msgspec.Raw | None] = ()
    if isinstance(raw, EventsJSON):
        try:  # each event's own text: one that reads is decoded from it, as in one call
            texts = _ITEMS_JSON.decode(raw.raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            texts = ()  # not an array: its values say why
        raw = raw.items()
    if len(texts) != len(raw):
        texts = [None] * len(raw)
    for position, (item, text) in enumerate(zip(raw, texts, strict=True)):
        found = _check_one(item, text)
        if isinstance(found, list):
            rejected.append(Rejection("invalid_event", "; ".join(found), item, position))
        else:
            accepted.append(found)
    return accepted, rejected


def _check_one(item: object, text: msgspec.Raw | None = None) -> Event | list[str]:
    """The event, or its reasons (`field: reason` each); from its JSON `text` when given and
    it reads (the values of what does not read say why)."""
    if not isinstance(item, dict):
        return [f"event: expected an object, got {type(item).__name__}"]
    try:
        event = _EVENT_JSON.decode(text) if text is not None else msgspec.convert(item, Event)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeEncodeError):
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
