"""Usage events: what a producer records, its limits, and the value it gives a metric.

The limits are those of the ledger (quantity NUMERIC(30,6)), of what PostgreSQL and Redis can
store (text without NUL, valid Unicode), of a datetime in UTC, and of a sane JSON payload; an
event that breaks one is refused with a reason that names the field, before it is queued.
This module is the one place those rules live: the model below, the worker's fast decoder
(`pricing.metering`) and the producer (`tasks.recorder`) all call the checks defined here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pricing.errors import join_path
from pricing.fields import value_text
from pricing.money import format_decimal, parse_decimal
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

# NUL, which PostgreSQL text and jsonb refuse, and UTF-16 surrogates, which no UTF-8 encoder
# accepts (a Python str may hold them: the JSON string "\ud800" decodes to one).
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_QUANTITY_QUANTUM = Decimal(1).scaleb(-QUANTITY_PLACES)
# Quantize and compare without the caller's context: digits are bounded before it is used.
_EXACT = Context(prec=60)

PropertyValue = str | int | float | bool


class EventLike(Protocol):
    """Anything with an event's attributes: a `UsageEvent`, a ledger row, a test double."""

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


class EventError(ValueError):
    """An event refused, with every reason; each reason names its field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(reason for _path, reason in self.errors))


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
    assert isinstance(exponent, int)  # finite
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
        raise ValueError("must include a UTC offset")
    try:
        return timestamp.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{timestamp.isoformat()} cannot be converted to UTC (years 1 to 9999)"
        ) from None


def _quantity(value: object) -> Decimal:
    try:
        quantity = parse_decimal(value)
    except ValueError as error:
        raise ValueError(f"quantity: {_shown(error)}") from None
    try:
        return checked_number(quantity)
    except ValueError as error:
        raise ValueError(f"quantity: {error}, got {_shown(value)}") from None


def _shown(value: object) -> str:
    """A value as a message shows it: short, and strings as their repr (NUL and surrogates
    escaped); the message is stored as text with the rejected event."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = text if len(text) <= 80 else f"{text[:77]}..."
    return UNSTORABLE_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _properties(value: object) -> dict[str, PropertyValue]:
    if not isinstance(value, Mapping):
        raise ValueError("properties: must be an object of names to values")
    if len(value) > MAX_PROPERTIES:
        raise ValueError(f"properties: at most {MAX_PROPERTIES} keys, got {len(value)}")
    problems = [problem for key, item in value.items() if (problem := property_problem(key, item))]
    if problems:
        raise ValueError("; ".join(problems))
    # An exact Decimal is kept as its canonical text: JSON has no decimals, and text survives
    # the trip through the queue unchanged (a float would not be exact).
    return {
        key: format_decimal(item) if isinstance(item, Decimal) else item
        for key, item in value.items()
    }


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
    assert isinstance(exponent, int)  # finite
    return max(value.adjusted() + 1, 1) + max(-exponent, 0)


class UsageEvent(BaseModel):
    """One usage event. Timestamps are stored in UTC; `quantity` may be negative (a correction).

    Property values may also be given as `Decimal` (exact amounts from Python callers); they
    are stored as their canonical text ("12.5"), which every aggregation reads as a number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    customer_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    metric: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    quantity: Annotated[Decimal, BeforeValidator(_quantity)] = Decimal(1)
    timestamp: datetime
    properties: Annotated[dict[str, PropertyValue], BeforeValidator(_properties)] = Field(
        default_factory=dict
    )

    @field_validator("event_id", "customer_id", "metric", mode="before")
    @classmethod
    def _storable(cls, value: object, info: ValidationInfo) -> object:
        # Before pydantic's own check, which calls a lone surrogate "unable to parse raw data".
        if isinstance(value, str) and (problem := text_problem(value)):
            raise ValueError(f"{info.field_name}: {problem}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, timestamp: datetime) -> datetime:
        try:
            return utc_timestamp(timestamp)
        except ValueError as error:
            raise ValueError(f"timestamp: {error}") from None


def parse_event(data: Mapping[str, Any]) -> UsageEvent:
    """A `UsageEvent` from a plain mapping; a bad one raises `EventError`."""
    try:
        return UsageEvent.model_validate(dict(data))
    except ValidationError as error:
        raise EventError(_event_errors(error)) from None


def _event_errors(error: ValidationError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path = path + f"[{part}]" if isinstance(part, int) else join_path(path, part)
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            reason = "required"
        elif item["type"] == "extra_forbidden":
            reason = "unknown key"
        if not reason.startswith(f"{path}:") and not reason.startswith(f"{path}."):
            reason = f"{path}: {reason}"
        found.append((path, reason))
    return found


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
