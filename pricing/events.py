"""The usage event contract: its limits, its schema, and the reasons an event is refused.

The limits are those of the ledger (quantity NUMERIC(30,6)), of what PostgreSQL and Redis can
store (text without NUL, valid Unicode), of a datetime in UTC, and of a sane JSON payload. This
module is the one place they are defined: `Event` is the schema (a msgspec Struct, decoded a
whole batch at a time by `pricing.decoding.decode_batch`, which the worker, the CLI and any
other reader of JSON events use), and the `check_*` functions apply the same rules to the
Python values a producer passes to `tasks.record_usage`. Every refusal names its field first
(`quantity: ...`, `properties.note: ...`), with the same reason whichever way the event came.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Any, Protocol

import msgspec

from pricing.errors import UserError
from pricing.fields import TIMESTAMP_EXAMPLE, value_text
from pricing.money import parse_decimal
from pricing.plans import MetricDefinition

MAX_ID_LENGTH = 128
MAX_QUANTITY_DIGITS = 18
MAX_QUANTITY = Decimal(10) ** MAX_QUANTITY_DIGITS  # exclusive bound on |quantity|
QUANTITY_PLACES = 6
#: Decimal places of a property a metric reads as a number (`field`): floats computed by a
#: producer (1/3 has 16) fit, and sums stay exact within `pricing.money.EXACT_PRECISION`.
VALUE_PLACES = 30
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_LENGTH = 64
MAX_PROPERTY_STRING_LENGTH = 512  # also bounds the digits of a number property
_MAX_PROPERTY_INT = 10**MAX_PROPERTY_STRING_LENGTH
_MAX_INT_QUANTITY = int(MAX_QUANTITY)

# NUL, which PostgreSQL text and jsonb refuse, and UTF-16 surrogates, which no UTF-8 encoder
# accepts (a Python str may hold them: the JSON string "\ud800" decodes to one).
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
# Quantize and compare without the caller's context: digits are bounded before it is used.
_EXACT = Context(prec=60)

PropertyValue = str | int | float | bool
DEFAULT_QUANTITY = Decimal(1)

# --- the schema ------------------------------------------------------------------------------
# What msgspec checks in C for a whole batch at once: shape, types, lengths. What it cannot
# express (NUL, lone surrogates, the quantity's range and places, conversion to UTC, the
# magnitude of numbers) `decoding.finish` checks in one Python pass per event.

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROPERTY_KEY_LENGTH)]
_Value = bool | int | float | Annotated[str, msgspec.Meta(max_length=MAX_PROPERTY_STRING_LENGTH)]
_Properties = Annotated[dict[_Key, _Value], msgspec.Meta(max_length=MAX_PROPERTIES)]


class Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One usage event: timestamps in UTC once decoded; `quantity` may be negative (a
    correction). Built by keyword; building one directly checks nothing (decoding does)."""

    event_id: _Id
    customer_id: _Id
    metric: _Id
    quantity: Decimal = DEFAULT_QUANTITY
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    properties: _Properties = msgspec.field(default_factory=dict)


#: The event's keys, in order, and those a JSON event must have (the producer fills in the
#: id and the time when its caller gives none).
EVENT_KEYS = Event.__struct_fields__
REQUIRED_KEYS = ("event_id", "customer_id", "metric", "timestamp")


class EventLike(Protocol):
    """Anything with an event's attributes: an `Event`, a ledger row, a test double."""

    @property
    def event_id(self) -> str: ...

    @property
    def customer_id(self) -> str: ...

    @property
    def metric(self) -> str: ...

    @property
    def quantity(self) -> Decimal: ...

    @property
    def timestamp(self) -> datetime: ...

    @property
    def properties(self) -> Mapping[str, object]: ...


class EventError(UserError):
    """An event refused, with every reason; each reason names its field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(reason for _path, reason in self.errors))


@dataclass(frozen=True)
class Rejection:
    """An event refused, with a reason code, a message naming the field, what was sent, and
    where it was in its batch (0-based; None when it was judged alone)."""

    reason: str
    detail: str
    payload: Any
    position: int | None = None

    def _get(self, key: str) -> str | None:
        value = self.payload.get(key) if isinstance(self.payload, Mapping) else None
        return value[:128] if isinstance(value, str) else None

    @property
    def event_id(self) -> str | None:
        return self._get("event_id")

    @property
    def customer_id(self) -> str | None:
        return self._get("customer_id")

    @property
    def metric(self) -> str | None:
        return self._get("metric")


def event_json(event: EventLike) -> dict[str, Any]:
    """An event as JSON carries it (exact decimal text, RFC 3339 in UTC)."""
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "metric": event.metric,
        "quantity": str(event.quantity),
        "timestamp": event.timestamp.isoformat(),
        "properties": dict(event.properties),
    }


# --- the rules -------------------------------------------------------------------------------


def text_problem(text: str) -> str | None:
    """Why PostgreSQL or Redis could not store `text`, or None when they can."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    if not text.isascii() and UNSTORABLE_CHARACTERS.search(text):
        return "must not contain a lone surrogate (\\ud800-\\udfff): not valid Unicode"
    return None


def checked_number(value: Decimal, places: int = QUANTITY_PLACES) -> Decimal:
    """`value` if it is finite, below 10^18 in magnitude and has at most `places` decimal
    places (written with at most `places` digits after the point: 1.5000000 becomes 1.500000);
    else ValueError with the bare reason.

    No arithmetic before the bounds hold: `abs(Decimal("1e999999999"))` raises
    `decimal.Overflow` in the default context, and PostgreSQL refuses such a numeric.
    """
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value.is_zero():
        return Decimal(0)  # drops any exponent (0E+999999999 is not a numeric PostgreSQL reads)
    if value.adjusted() >= MAX_QUANTITY_DIGITS:
        raise ValueError(f"must be less than 10^{MAX_QUANTITY_DIGITS} in absolute value")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite  # noqa: S101 (invariant for mypy, not validation)
    if exponent >= -places:
        return value
    exact = value.quantize(Decimal(1).scaleb(-places), context=_EXACT)
    if exact != value:
        raise ValueError(f"at most {places} decimal places")
    return exact


def utc_timestamp(timestamp: datetime) -> datetime:
    """The same instant in UTC; ValueError without an offset, or when the instant cannot be
    expressed in UTC (9999-12-31T23:59:59-14:00 is after the last datetime)."""
    if timestamp.utcoffset() is None:
        raise ValueError(f"must include a UTC offset ({TIMESTAMP_EXAMPLE})")
    try:
        return timestamp.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{timestamp.isoformat()} cannot be converted to UTC (years 1 to 9999)"
        ) from None


def shown(value: object) -> str:
    """A value as a message shows it: short, and strings as their repr (NUL and surrogates
    escaped); never an error itself (an int of 5000 digits has no str). The message is stored
    as text with the rejected event."""
    if isinstance(value, int) and value.bit_length() > 600:
        return f"an int of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, str) else str(value)
    text = text if len(text) <= 80 else f"{text[:77]}..."
    return UNSTORABLE_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def id_reason(value: object) -> str:
    """Why `value` cannot be an event's id, customer or metric (a bare reason)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        problem = text_problem(value)
        if problem:
            return problem
    return f"must be a string of 1 to {MAX_ID_LENGTH} characters, got {shown(value)}"


def properties_problem(value: object) -> str | None:
    """Why `value` cannot be an event's properties, naming the key, or None."""
    if not isinstance(value, Mapping):
        return f"properties: must be an object of names to values, got {type(value).__name__}"
    if len(value) > MAX_PROPERTIES:
        return f"properties: at most {MAX_PROPERTIES} keys, got {len(value)}"
    for key, item in value.items():
        if problem := property_problem(key, item):
            return problem
    return None


def property_problem(key: object, item: object) -> str | None:
    """Why one property cannot be kept, naming it, or None. Values may be `Decimal` (Python
    callers); any number is bounded by its digits, like a string by its length."""
    # The plain case first, cheaply (the ingest hot path calls this per property): an ASCII
    # key and value without NUL, within their lengths, or a small finite number.
    if (
        type(key) is str
        and 0 < len(key) <= MAX_PROPERTY_KEY_LENGTH
        and key.isascii()
        and "\x00" not in key
    ):
        if type(item) is str:
            if len(item) <= MAX_PROPERTY_STRING_LENGTH and item.isascii() and "\x00" not in item:
                return None
        elif (
            type(item) is bool
            or (type(item) is int and -_MAX_PROPERTY_INT < item < _MAX_PROPERTY_INT)
            or (type(item) is float and math.isfinite(item))
        ):
            return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH:
        return f"properties: a key must be a string of 1 to {MAX_PROPERTY_KEY_LENGTH} characters"
    if problem := text_problem(key):
        return f"properties: a key {problem}, got {key!r:.80}"
    if isinstance(item, str):
        if len(item) > MAX_PROPERTY_STRING_LENGTH:
            return f"properties.{key}: at most {MAX_PROPERTY_STRING_LENGTH} characters"
        if problem := text_problem(item):
            return f"properties.{key}: {problem}"
        return None
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        if -_MAX_PROPERTY_INT < item < _MAX_PROPERTY_INT:
            return None
        return f"properties.{key}: a number of at most {MAX_PROPERTY_STRING_LENGTH} digits"
    if isinstance(item, float | Decimal):
        if isinstance(item, float) and not math.isfinite(item):
            return f"properties.{key}: must be a finite number"
        if isinstance(item, Decimal) and not item.is_finite():
            return f"properties.{key}: must be a finite number"
        if isinstance(item, Decimal) and _digits(item) > MAX_PROPERTY_STRING_LENGTH:
            return f"properties.{key}: a number of at most {MAX_PROPERTY_STRING_LENGTH} digits"
        return None
    return f"properties.{key}: must be a string, number or boolean"


def _digits(value: Decimal) -> int:
    """How many digits `value` has written without an exponent (computed, not written out:
    Decimal("1e999999999") would take a gigabyte)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite  # noqa: S101 (invariant for mypy, not validation)
    return max(value.adjusted() + 1, 1) + max(-exponent, 0)


def matches_filter(metric: MetricDefinition, event: EventLike) -> bool:
    """True when every filtered property exists on the event with one of the listed values."""
    for key, allowed in (metric.filter or {}).items():
        if key not in event.properties:
            return False
        try:
            text = value_text(event.properties[key])
        except ValueError:
            return False
        if text not in allowed:
            return False
    return True


def event_value(metric: MetricDefinition, event: EventLike) -> Decimal | str | None:
    """The value `event` contributes to `metric`, or None when it contributes nothing.

    None when the filter leaves it out or the field is missing, not numeric or out of range
    (`checked_number` with `VALUE_PLACES`: sums must stay exact and fit a PostgreSQL numeric).
    Otherwise the property `field` as a decimal (or `quantity` without a field); for
    unique_count, the text of the property, since distinct values are what is counted.
    """
    if not matches_filter(metric, event):
        return None
    if metric.field is None:
        return None if metric.aggregation == "unique_count" else event.quantity
    raw = event.properties.get(metric.field)
    if raw is None:
        return None
    try:
        if metric.aggregation == "unique_count":
            return value_text(raw)
        if isinstance(raw, bool):
            return None
        return checked_number(parse_decimal(raw), VALUE_PLACES)
    except ValueError:
        return None


# --- a producer's Python values (tasks.record_usage): the same rules, Python types ----------
# Each raises EventError (a ValueError) whose message starts with the field; the recorder calls
# them only when its inline fast checks did not already pass the value.


def check_id(field: str, value: object) -> str:
    """An id, customer or metric: a str (a subclass as its plain value)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and not text_problem(value):
        return str.__str__(value)
    raise EventError([(field, f"{field}: {id_reason(value)}")])


def check_quantity(value: object) -> int | float | Decimal:
    """An int, float or Decimal quantity, kept as given (the message writes its exact text)."""
    if isinstance(value, bool):
        raise EventError([("quantity", "quantity: must be a number, not a boolean")])
    if not isinstance(value, int | float | Decimal):
        reason = f"quantity: must be int, Decimal or float, got {type(value).__name__}"
        raise EventError([("quantity", reason)])
    if isinstance(value, int) and -_MAX_INT_QUANTITY < value < _MAX_INT_QUANTITY:
        return int(value)
    try:
        # A float's shortest decimal is what is sent; parse_decimal reads it that way.
        number = value if isinstance(value, Decimal) else parse_decimal(value)
        checked = checked_number(number)
    except ValueError as error:
        reason = f"quantity: {error}" + ("" if ", got" in str(error) else f", got {shown(value)}")
        raise EventError([("quantity", reason)]) from None
    return float(value) if isinstance(value, float) else checked


def check_timestamp(value: object) -> datetime:
    """An aware datetime, as the same instant in UTC."""
    if not isinstance(value, datetime):
        reason = f"timestamp: must be a datetime, got {type(value).__name__}"
        raise EventError([("timestamp", reason)])
    try:
        return utc_timestamp(value)
    except ValueError as error:
        raise EventError([("timestamp", f"timestamp: {error}, got {value.isoformat()}")]) from None


def check_properties(value: object) -> dict[str, PropertyValue]:
    """A checked copy (the caller may change its dict afterwards), each value as a message
    carries it: subclasses as their plain value, a Decimal as its exact text."""
    problem = properties_problem(value)
    if problem is not None or not isinstance(value, dict):
        problem = problem or f"properties: must be a dict, got {type(value).__name__}"
        raise EventError([(problem.split(":", 1)[0], problem)])
    return {str.__str__(key): _plain_value(item) for key, item in value.items()}


def _plain_value(value: object) -> PropertyValue:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    assert isinstance(value, Decimal)  # property_problem allows nothing else  # noqa: S101 (invariant for mypy, not validation)
    return format(value, "f")  # money stays exact: a Decimal is sent as a decimal string
