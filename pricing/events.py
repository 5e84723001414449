"""Usage events: what a producer records, its limits, and the value it gives a metric.

The limits are those of the ledger (quantity NUMERIC(30,6)) and of a sane JSON payload; an
event that breaks one is refused with a reason that names the field, before it is queued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from pricing.errors import join_path
from pricing.fields import value_text
from pricing.money import format_decimal, parse_decimal
from pricing.plans import MetricDefinition

MAX_ID_LENGTH = 128
MAX_QUANTITY = Decimal(10) ** 18
QUANTITY_PLACES = 6
MAX_PROPERTIES = 50
MAX_PROPERTY_KEY_LENGTH = 64
MAX_PROPERTY_STRING_LENGTH = 512

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


def _quantity(value: object) -> Decimal:
    try:
        quantity = parse_decimal(value)
    except ValueError as error:
        raise ValueError(f"quantity: {error}") from None
    if abs(quantity) >= MAX_QUANTITY:
        raise ValueError(f"quantity: must be less than 10^18 in absolute value, got {value}")
    if quantity != quantity.quantize(Decimal(1).scaleb(-QUANTITY_PLACES)):
        raise ValueError(f"quantity: at most {QUANTITY_PLACES} decimal places, got {value}")
    return quantity


def _properties(value: object) -> dict[str, PropertyValue]:
    if not isinstance(value, Mapping):
        raise ValueError("properties: must be an object of names to values")
    if len(value) > MAX_PROPERTIES:
        raise ValueError(f"properties: at most {MAX_PROPERTIES} keys, got {len(value)}")
    problems = [problem for key, item in value.items() if (problem := _property_problem(key, item))]
    if problems:
        raise ValueError("; ".join(problems))
    # An exact Decimal is kept as its canonical text: JSON has no decimals, and text survives
    # the trip through the queue unchanged (a float would not be exact).
    return {
        key: format_decimal(item) if isinstance(item, Decimal) else item
        for key, item in value.items()
    }


def _property_problem(key: object, item: object) -> str | None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH:
        return f"properties: a key must be a string of 1 to {MAX_PROPERTY_KEY_LENGTH} characters"
    if isinstance(item, str) and len(item) > MAX_PROPERTY_STRING_LENGTH:
        return f"properties.{key}: at most {MAX_PROPERTY_STRING_LENGTH} characters"
    if isinstance(item, float) and not math.isfinite(item):
        return f"properties.{key}: must be a finite number"
    if isinstance(item, Decimal) and not item.is_finite():
        return f"properties.{key}: must be a finite number"
    if not isinstance(item, str | int | float | Decimal):  # bool is an int
        return f"properties.{key}: must be a string, number or boolean"
    return None


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

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, timestamp: datetime) -> datetime:
        if timestamp.utcoffset() is None:
            raise ValueError("timestamp: must include a UTC offset")
        return timestamp.astimezone(UTC)


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

    None when the filter leaves it out or the field is missing or not numeric. Otherwise the
    property `field` as a decimal (or `quantity` without a field); for unique_count, the text
    of the property, since distinct values are what is counted.
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
        return parse_decimal(raw)
    except ValueError:
        return None
