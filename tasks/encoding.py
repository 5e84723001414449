"""How Dramatiq messages are decoded here: its JSON, made tolerant of junk inside a batch.

Dramatiq's `JSONEncoder` gives up on a whole message when one value in it cannot be read:
bytes that are not UTF-8, or an integer of more than 4300 digits (Python's `int()` limit).
Either would make every event of the batch undecodable, and the message would never reach
the ingest actor to be counted or rejected. Here such bytes decode as lone surrogates
(`surrogateescape`) and such integers as `Decimal`: the event that holds them is rejected
with a reason (`pricing.events` refuses both), and the rest of its batch is counted.
Encoding is Dramatiq's own, so producers and workers still agree on every valid message.

Decoding tries msgspec first (C, about 1.3 µs per event of a batch against 1.8 for `json`);
anything msgspec refuses (bytes that are not UTF-8, integers beyond 64 bits, `NaN`) takes
the tolerant path above, so the result is the same either way. The recorder's own batches are
encoded by msgspec too (`tasks.message.BatchMessage`): ten times faster than `json.dumps`.

The worker's own encoder (`WorkerEncoder`, installed by `workers.app`) goes one step further
for ingest messages: the batch's events stay the JSON text they arrived as (`EventsJSON`), which
`pricing.decoding.decode_batch` turns into events in one call, with no dict per event in
between. Re-encoding such a message (a retry, a dead letter) writes that text back unchanged.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
from dramatiq.encoder import JSONEncoder, MessageData
from dramatiq.errors import DecodeError

from pricing.decoding import EventsJSON
from tasks.names import INGEST_EVENTS

_FAST = msgspec.json.Decoder()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])  # one level, the values left as text
_ARGS = msgspec.json.Decoder(list[msgspec.Raw])
_ENCODER = msgspec.json.Encoder(enc_hook=lambda value: _as_json(value))


def _integer(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts: only a junk value can be this long
        return Decimal(text)


def read_json(data: bytes) -> Any:
    """JSON text as Python values, keeping what can be kept: msgspec first, then (bytes that
    are not UTF-8, integers beyond 64 bits, `NaN`) the tolerant decoder described above;
    ValueError or RecursionError when it is not JSON at all."""
    try:
        return _FAST.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass  # read again by the tolerant decoder, which keeps what can be kept
    return json.loads(data.decode("utf-8", errors="surrogateescape"), parse_int=_integer)


class MessageEncoder(JSONEncoder):
    """Dramatiq's JSON messages, decoded without losing a batch to one unreadable value."""

    def encode(self, data: MessageData) -> bytes:
        # A message decoded by `WorkerEncoder` may travel inside another (a dead letter's
        # message data): its events are written as their values.
        return json.dumps(data, separators=(",", ":"), default=_as_values).encode("utf-8")

    def decode(self, data: bytes) -> MessageData:
        try:
            decoded: MessageData = read_json(data)
        except (ValueError, RecursionError) as error:  # not JSON, or nested beyond the limit
            text = data.decode("utf-8", errors="surrogateescape")
            raise DecodeError(f"failed to decode message {text[:200]!r}", text, error) from None
        return decoded


class WorkerEncoder(MessageEncoder):
    """The worker's encoder: an ingest message's events are left as their JSON text
    (`EventsJSON`, decoded into events by `decode_batch`); anything else, or any message
    whose other values do not read with msgspec, as `MessageEncoder` reads it."""

    def decode(self, data: bytes) -> MessageData:
        try:
            fields = _FIELDS.decode(data)
            if "args" in fields and _FAST.decode(fields.get("actor_name", b"0")) == INGEST_EVENTS:
                return _ingest_message(fields)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        return super().decode(data)

    def encode(self, data: MessageData) -> bytes:
        args = data.get("args")
        batch = args[0] if isinstance(args, list | tuple) and args else None
        if isinstance(batch, dict) and isinstance(batch.get("events"), EventsJSON):
            try:  # the events' text written back as it came, the rest as msgspec writes it
                return _ENCODER.encode(data)
            except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
                pass
        return super().encode(data)


def _ingest_message(fields: dict[str, msgspec.Raw]) -> MessageData:
    """An ingest message whose values read with msgspec, its batch's events left as text."""
    message: MessageData = {
        key: _FAST.decode(value) for key, value in fields.items() if key != "args"
    }
    args = _ARGS.decode(fields["args"])
    batch = _FIELDS.decode(args[0]) if len(args) == 1 and _first_byte(args[0]) == b"{" else None
    if batch is None:
        message["args"] = [_FAST.decode(arg) for arg in args]
        return message
    message["args"] = [
        {
            key: EventsJSON(value, read_json)
            if key == "events" and _first_byte(value) == b"["
            else _FAST.decode(value)
            for key, value in batch.items()
        }
    ]
    return message


def _as_json(value: object) -> msgspec.Raw:
    if isinstance(value, EventsJSON):
        return value.raw
    raise NotImplementedError(f"{type(value).__name__} is not JSON")


def _as_values(value: object) -> list[Any]:
    if isinstance(value, EventsJSON):
        return value.items()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _first_byte(text: msgspec.Raw) -> bytes:
    return memoryview(text)[:1].tobytes()
