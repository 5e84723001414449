"""Decoding and validating one ingest batch: which one-call batch decoder should own the event
contract (issue 9), measured against the worker's current per-event decoder.

Three decoders turn a 5,000-event batch into events with a Decimal quantity and a UTC
timestamp, each enforcing the contract of `pricing/events.py` (ids 1-128 characters without
NUL or lone surrogates; quantity a finite decimal, |q| < 10^18, at most 6 places; an RFC 3339
timestamp with an offset that converts to UTC; at most 50 properties, keys 1-64 characters,
values str <= 512 characters / int / finite float / bool; no unknown keys):

- `contract`: `pricing.decoding.decode_batch`, what the worker and the CLI use since issue 9
  (msgspec `convert` over the batch + `finish` per event; per-event fallback for a bad batch);
  before issue 9 this row was the hand-written per-event `decode_event` (figures in the
  issue 9 plan and report);
- `pydantic`: one `TypeAdapter(list[SpeedEvent]).validate_json` / `.validate_python` call;
  constraints in pydantic-core (Rust), one small Python step per event (UTC conversion);
- `msgspec`:  one `msgspec.json.decode(..., type=list[MsgEvent])` / `msgspec.convert` call,
  then a Python post-check per event for what msgspec cannot express (NUL, surrogates,
  quantity range and scale, UTC conversion).

Each is timed from two inputs: the batch as JSON bytes (what a message body holds) and as
Python dicts (what a Dramatiq actor receives today: the broker's encoder has already run
`json.loads`, so a bytes decoder needs the batch carried as one JSON string, or a custom
encoder). Also timed: a batch with one bad event (what a one-call decoder costs when it has to
fall back to per-event decoding to keep the good events), and the error each reports.

    .venv/bin/python -m bench.bench_decode [--events 5000] [--runs 15]

Needs `msgspec` (pip install msgspec); nothing else, no servers.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Annotated, Any, NotRequired

import msgspec
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before 3.12

from pricing.decoding import decode_batch
from pricing.events import (
    MAX_ID_LENGTH,
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_STRING_LENGTH,
    QUANTITY_PLACES,
)

QUANTITY_DIGITS = 18  # |quantity| < 10^18 (pricing.events.MAX_QUANTITY)
_ZERO = Decimal(0)
_QUANTUM = Decimal(1).scaleb(-QUANTITY_PLACES)
_EXACT = Context(prec=60)
_MAX_INT = 10**MAX_PROPERTY_STRING_LENGTH


# --- the batch -----------------------------------------------------------------------------


def make_batch(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Events as producers send them: decimal-string quantities, offsets other than UTC too."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    zones = [timedelta(0), timedelta(hours=2), timedelta(hours=-5), timedelta(hours=5, minutes=30)]
    events = []
    for i in range(count):
        zone = zones[i % len(zones)]
        at = (start + timedelta(seconds=rng.randrange(2_500_000), microseconds=i)).astimezone(
            timezone(zone)
        )
        properties: dict[str, Any] = {"region": rng.choice(["eu", "us", "uk"])}
        if i % 3 == 0:
            properties["endpoint"] = f"/v1/items/{rng.randrange(1000)}"
        if i % 5 == 0:
            properties["amount"] = round(rng.uniform(1, 500), 2)
        events.append(
            {
                "event_id": f"Xq3kP9aZ81bC-{i}",
                "customer_id": f"cus_{rng.randrange(500)}",
                "metric": rng.choice(["api_calls", "storage_gb", "payments"]),
                "quantity": rng.choice(["1", "2", "12.5", "0.000125", "1000"]),
                "timestamp": at.isoformat(),
                "properties": properties,
            }
        )
    return events


# Each is (position it replaces, event, what a correct decoder must name).
BAD_EVENTS: list[tuple[int, dict[str, Any], str]] = [
    (3, {"quantity": "abc"}, "quantity"),
    (40, {"customer_id": ""}, "customer_id"),
    (41, {"metric": "api\x00calls"}, "metric"),
    (42, {"timestamp": "2026-11-27T10:00:00"}, "timestamp"),
    (43, {"quantity": "1e999999999"}, "quantity"),
    (44, {"quantity": "0.0000001"}, "quantity"),
    (45, {"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
    (46, {"properties": {"note": "x" * 600}}, "properties.note"),
    (47, {"surprise": 1}, "surprise"),
    (48, {"event_id": "evt-\ud800"}, "event_id"),
]


def with_bad_events(events: list[dict[str, Any]], bad: list[Any]) -> list[dict[str, Any]]:
    out = [dict(e) for e in events]
    for position, change, _field in bad:
        out[position] = {**out[position], **change}
    return out


# --- (c) the contract's decoder (pricing.decoding) --------------------------------------


def current_decode(raw: list[Any]) -> tuple[list[Any], list[tuple[int, str]]]:
    events, rejected = decode_batch(raw)
    return events, [(r.position or 0, r.detail) for r in rejected]


def current_bytes(data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    return current_decode(json.loads(data))


# --- shared post-checks (the rules neither library expresses) ------------------------------


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


def _quantity(value: Decimal) -> Decimal:
    """pricing.events' quantity rule on a Decimal: finite, < 10^18, at most 6 places."""
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value.is_zero():
        return _ZERO
    if value.adjusted() >= QUANTITY_DIGITS:
        raise ValueError(f"must be less than 10^{QUANTITY_DIGITS} in absolute value")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent >= -QUANTITY_PLACES:
        return value
    exact = value.quantize(_QUANTUM, context=_EXACT)
    if exact != value:
        raise ValueError(f"at most {QUANTITY_PLACES} decimal places")
    return exact


def _utc(timestamp: datetime) -> datetime:
    try:
        return timestamp.astimezone(UTC)
    except OverflowError:
        raise ValueError("cannot be converted to UTC (years 1 to 9999)") from None


# --- (a) pydantic-core: one validate_json / validate_python over the batch ------------------

_NO_NUL = r"^[^\x00]*$"  # Rust regex in pydantic-core; surrogates never reach a Rust str
PId = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=_NO_NUL),
]
PKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_PROPERTY_KEY_LENGTH, pattern=_NO_NUL)
]
PText = Annotated[
    str, StringConstraints(strict=True, max_length=MAX_PROPERTY_STRING_LENGTH, pattern=_NO_NUL)
]
PValue = (
    StrictBool
    | Annotated[StrictInt, Field(gt=-_MAX_INT, lt=_MAX_INT)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | PText
)
PQuantity = Annotated[
    Decimal,
    Field(
        max_digits=QUANTITY_DIGITS + QUANTITY_PLACES,
        decimal_places=QUANTITY_PLACES,
        allow_inf_nan=False,
    ),
    AfterValidator(lambda q: q if q else _ZERO),  # 0E+999999999 -> 0 (PostgreSQL refuses it)
]


class SpeedEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, cache_strings="keys")

    event_id: PId
    customer_id: PId
    metric: PId
    quantity: PQuantity = Decimal(1)
    timestamp: Annotated[AwareDatetime, AfterValidator(_utc)]
    properties: Annotated[dict[PKey, PValue], Field(max_length=MAX_PROPERTIES)] = Field(
        default_factory=dict
    )


class SpeedEventDict(TypedDict):
    """The same contract as a TypedDict: pydantic-core builds plain dicts, no model instances."""

    __pydantic_config__ = ConfigDict(extra="forbid", cache_strings="keys")  # type: ignore[misc]
    event_id: PId
    customer_id: PId
    metric: PId
    quantity: NotRequired[PQuantity]
    timestamp: Annotated[AwareDatetime, AfterValidator(_utc)]
    properties: NotRequired[Annotated[dict[PKey, PValue], Field(max_length=MAX_PROPERTIES)]]


PYDANTIC_DICTS = TypeAdapter(list[SpeedEventDict])
PYDANTIC_BATCH = TypeAdapter(list[SpeedEvent])
PYDANTIC_ONE = TypeAdapter(SpeedEvent)


def _pydantic_errors(error: ValidationError) -> list[tuple[int, str]]:
    found = []
    for item in error.errors(include_url=False):
        index, *path = item["loc"]
        found.append((int(index), f"{'.'.join(map(str, path))}: {item['msg']}"))
    return found


def pydantic_bytes(data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    try:
        return PYDANTIC_BATCH.validate_json(data), []
    except ValidationError as error:
        if error.title != "list[SpeedEvent]" or error.errors()[0]["type"] == "json_invalid":
            return pydantic_python(json.loads(data))  # e.g. a lone surrogate escape: jiter
        return _pydantic_keep_good(json.loads(data), _pydantic_errors(error))  # refuses JSON


def pydantic_dict_bytes(data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    """The TypedDict variant, valid batches only (errors as for the model)."""
    return PYDANTIC_DICTS.validate_json(data), []


def pydantic_python(raw: list[Any]) -> tuple[list[Any], list[tuple[int, str]]]:
    try:
        return PYDANTIC_BATCH.validate_python(raw), []
    except ValidationError as error:
        return _pydantic_keep_good(raw, _pydantic_errors(error))


def _pydantic_keep_good(
    raw: list[Any], errors: list[tuple[int, str]]
) -> tuple[list[Any], list[tuple[int, str]]]:
    """Every error is already known (pydantic reports them all); validate the rest again."""
    bad = {index for index, _ in errors}
    good = PYDANTIC_BATCH.validate_python([e for i, e in enumerate(raw) if i not in bad])
    return good, errors


# --- (b) msgspec: one decode / convert over the batch, then Python post-checks --------------

MId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
MKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROPERTY_KEY_LENGTH)]
MValue = bool | int | float | Annotated[str, msgspec.Meta(max_length=MAX_PROPERTY_STRING_LENGTH)]


class MsgEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: MId
    customer_id: MId
    metric: MId
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    quantity: Decimal = Decimal(1)
    properties: Annotated[dict[MKey, MValue], msgspec.Meta(max_length=MAX_PROPERTIES)] = (
        msgspec.field(default_factory=dict)
    )


MSG_BATCH = msgspec.json.Decoder(list[MsgEvent])
MSG_RAW = msgspec.json.Decoder(list[msgspec.Raw])
MSG_ONE = msgspec.json.Decoder(MsgEvent)


def _msg_post(event: MsgEvent, texts: bool = True) -> str | None:
    """Fix up one decoded event in place; the first broken rule as 'field: reason', or None.
    `texts=False` skips the NUL/surrogate checks (the caller has ruled both out for the batch).
    """
    if texts:
        for name in ("event_id", "customer_id", "metric"):
            if problem := _text_problem(getattr(event, name)):
                return f"{name}: {problem}"
    try:
        event.quantity = _quantity(event.quantity)
    except ValueError as error:
        return f"quantity: {error}"
    if event.timestamp.tzinfo is not UTC:
        try:
            event.timestamp = _utc(event.timestamp)
        except ValueError as error:
            return f"timestamp: {error}"
    for key, value in event.properties.items():
        if texts and (problem := _text_problem(key)):
            return f"properties: a key {problem}"
        if type(value) is str:
            if texts and (problem := _text_problem(value)):
                return f"properties.{key}: {problem}"
        elif type(value) is int:
            if not -_MAX_INT < value < _MAX_INT:
                return f"properties.{key}: a number of at most 512 digits"
        elif type(value) is float and not math.isfinite(value):
            return f"properties.{key}: must be a finite number"
    return None


def _msg_checked(
    events: list[MsgEvent], texts: bool = True
) -> tuple[list[Any], list[tuple[int, str]]]:
    good, errors = [], []
    for i, event in enumerate(events):
        problem = _msg_post(event, texts)
        if problem is None:
            good.append(event)
        else:
            errors.append((i, problem))
    return good, errors


def msgspec_bytes(data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    try:
        # msgspec refuses lone surrogate escapes itself (DecodeError), and a NUL can only be
        # written `\u0000` in JSON: one C-speed scan of the bytes rules out both per batch.
        return _msg_checked(MSG_BATCH.decode(data), texts=b"\\u0000" in data)
    except msgspec.ValidationError:
        pass  # msgspec stops at the first error: decode each event alone to find them all
    except msgspec.DecodeError:
        return msgspec_python(json.loads(data))  # lone surrogate escapes: msgspec refuses JSON
    try:
        parts = MSG_RAW.decode(data)
    except msgspec.DecodeError:
        return msgspec_python(json.loads(data))
    good, errors = [], []
    for i, part in enumerate(parts):
        try:
            event = MSG_ONE.decode(part)
        except msgspec.ValidationError as error:
            errors.append((i, str(error)))
            continue
        if (problem := _msg_post(event)) is None:
            good.append(event)
        else:
            errors.append((i, problem))
    return good, errors


def msgspec_python(raw: list[Any]) -> tuple[list[Any], list[tuple[int, str]]]:
    try:
        return _msg_checked(msgspec.convert(raw, list[MsgEvent]))
    except msgspec.ValidationError:
        pass
    good, errors = [], []
    for i, item in enumerate(raw):
        try:
            event = msgspec.convert(item, MsgEvent)
        except msgspec.ValidationError as error:
            errors.append((i, str(error)))
            continue
        if (problem := _msg_post(event)) is None:
            good.append(event)
        else:
            errors.append((i, problem))
    return good, errors


# --- timing --------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    run: Callable[[Any], tuple[list[Any], list[tuple[int, str]]]]
    input: str  # "bytes" or "dicts"


CASES = [
    Case("contract json.loads + decode_batch", current_bytes, "bytes"),
    Case("contract decode_batch (dicts)", current_decode, "dicts"),
    Case("pydantic validate_json", pydantic_bytes, "bytes"),
    Case("pydantic validate_python (dicts)", pydantic_python, "dicts"),
    Case("pydantic TypedDict validate_json", pydantic_dict_bytes, "bytes"),
    Case("msgspec  json.decode + post", msgspec_bytes, "bytes"),
    Case("msgspec  convert + post (dicts)", msgspec_python, "dicts"),
]


def timings(cases: list[Case], inputs: dict[str, Any], count: int, runs: int) -> dict[str, Any]:
    """µs per event, (min, median) per case. Cases take turns run after run, so a busy
    machine slows them alike; the minimum is the figure to compare when cores are shared."""
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(runs):
        for case in cases:
            started = time.perf_counter()
            case.run(inputs[case.input])
            samples[case.name].append((time.perf_counter() - started) / count * 1e6)
    return {name: (min(s), statistics.median(s)) for name, s in samples.items()}


def _key(event: Any) -> tuple[Any, ...]:
    get = event.get if isinstance(event, dict) else lambda name: getattr(event, name)
    return tuple(get(name) for name in ("event_id", "customer_id", "metric", "quantity"))


def check_same_events(good: list[dict[str, Any]]) -> None:
    """Every decoder decodes the valid batch to the same values (the bench compares equal
    work): same ids and quantities, timestamps equal and in UTC."""
    data = json.dumps(good).encode()
    reference: list[Any] = []
    for case in CASES:
        events, errors = case.run(data if case.input == "bytes" else good)
        assert not errors, (case.name, errors[:3])
        keys = [_key(e) for e in events]
        stamps = [e["timestamp"] if isinstance(e, dict) else e.timestamp for e in events]
        assert all(s.utcoffset() == timedelta(0) for s in stamps), case.name
        if not reference:
            reference = [keys, stamps]
        assert [keys, stamps] == reference, case.name


def _safe(case: Case, data: Any) -> tuple[list[Any], list[tuple[int, str]]]:
    try:
        return case.run(data)
    except Exception as error:  # the current decoder raises on some inputs (1e999999999)
        return [], [(-1, f"CRASHED the whole batch: {type(error).__name__}: {error}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    good = make_batch(args.events)
    bad = with_bad_events(good, BAD_EVENTS[:1])
    inputs = {
        ("good", "dicts"): good,
        ("good", "bytes"): json.dumps(good).encode(),
        ("one bad", "dicts"): bad,
        ("one bad", "bytes"): json.dumps(bad).encode(),
    }
    check_same_events(good)
    print(f"{args.events} events per batch, µs per event, min / median of {args.runs} runs\n")
    valid = timings(
        CASES, {k[1]: v for k, v in inputs.items() if k[0] == "good"}, args.events, args.runs
    )
    bad_cases = [case for case in CASES if "TypedDict" not in case.name]
    one_bad = timings(
        bad_cases, {k[1]: v for k, v in inputs.items() if k[0] == "one bad"}, args.events, args.runs
    )
    print(f"{'decoder':40} {'valid batch':>16} {'1 bad event':>16}")
    for case in CASES:
        v, b = valid[case.name], one_bad.get(case.name)
        bad_text = f"{b[0]:6.2f} / {b[1]:6.2f}" if b else f"{'-':>15}"
        print(f"{case.name:40} {v[0]:6.2f} / {v[1]:6.2f} {bad_text}")
    print("\nspeed-up over the contract decoder from the same input (valid batch, min):")
    for case in CASES[2:]:
        base = CASES[0] if case.input == "bytes" else CASES[1]
        print(f"  {case.name:40} {valid[base.name][0] / valid[case.name][0]:5.2f}x")

    print("\nerrors reported for a batch with bad events at", [p for p, _, _ in BAD_EVENTS])
    many = with_bad_events(good, BAD_EVENTS)
    for case in CASES:
        data = json.dumps(many).encode() if case.input == "bytes" else many
        if "TypedDict" in case.name:
            continue
        events, errors = _safe(case, data)
        print(f"\n{case.name}: {len(events)} kept, {len(errors)} rejected")
        for index, message in errors:
            print(f"  [{index}] {message[:110]!r}")
    first = _first_msgspec_error(json.dumps(many).encode())
    print(f"\nmsgspec's own whole-batch error (it stops at the first): {first}")


def _first_msgspec_error(data: bytes) -> str:
    try:
        MSG_BATCH.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return f"{type(error).__name__}: {error}"
    return "none"


if __name__ == "__main__":
    main()
