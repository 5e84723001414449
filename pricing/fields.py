"""Pydantic field types for plan and event values, read without ever passing through float."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator

from pricing.errors import echo
from pricing.money import exact_arithmetic, format_decimal, parse_decimal

#: The range of every number in a plan file: prices, tier bounds, fees, rates. Beyond it a
#: value is a typo (`1e400`), and arithmetic on it would overflow or run for ever.
MAX_PLAN_NUMBER = Decimal(10) ** 18
PLAN_NUMBER_PLACES = 12

TIMESTAMP_EXAMPLE = "e.g. 2026-11-27T10:00:00Z or 2026-11-27T11:00:00+01:00"


def plan_number(value: object) -> Decimal:
    """A plan file's number: finite, below 10^18 in absolute value, at most 12 decimals."""
    number = parse_decimal(value)
    if abs(number) >= MAX_PLAN_NUMBER:
        raise ValueError(f"must be less than 10^18 in absolute value, got {echo(value)}")
    with exact_arithmetic():
        exact = number == number.quantize(Decimal(1).scaleb(-PLAN_NUMBER_PLACES))
    if not exact:
        raise ValueError(f"at most {PLAN_NUMBER_PLACES} decimal places, got {echo(value)}")
    return number


def parse_timestamp(value: object) -> datetime:
    """An RFC 3339 timestamp (text with a UTC offset) as an aware UTC datetime; ValueError
    with the bare reason otherwise. A naive time is refused rather than guessed: UTC on one
    machine is local time on another."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"not an RFC 3339 timestamp ({TIMESTAMP_EXAMPLE}): {echo(value)}"
            ) from None
    else:
        raise ValueError(
            f"must be an RFC 3339 timestamp string ({TIMESTAMP_EXAMPLE}), got {echo(value)}"
        )
    if stamp.utcoffset() is None:
        raise ValueError(f"timestamp needs a UTC offset ({TIMESTAMP_EXAMPLE}), got {echo(value)}")
    try:
        return stamp.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"out of range: {echo(value)}") from None


def _non_negative(value: object) -> Decimal:
    number = plan_number(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _positive(value: object) -> Decimal:
    number = plan_number(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _percent(value: object) -> Decimal:
    number = plan_number(value)
    if not 0 <= number <= 100:
        raise ValueError("must be between 0 and 100")
    return number


def _fraction(value: object) -> Decimal:
    number = plan_number(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def parse_share(value: object) -> Decimal:
    """A share of included usage, written as a decimal: 0.8 is 80 %; above 1 is allowed
    (1.5 is 150 %), up to 100. Alert thresholds and `throttle_at` are both shares."""
    if isinstance(value, str) and value.strip().endswith("%"):
        raise ValueError(f'write a share as a decimal ("0.95" for 95 %), got {echo(value)}')
    number = plan_number(value)
    if not 0 < number <= 100:
        raise ValueError(
            "a share of included usage (0.8 is 80 %) greater than 0 and at most 100,"
            f" got {echo(value)}"
        )
    return number


def _count(value: object) -> int:
    number = plan_number(value)
    if number != number.to_integral_value():
        raise ValueError("must be a whole number")
    if number < 0:
        raise ValueError("must not be negative")
    return int(number)


def value_text(value: object) -> str:
    """The text a property or filter value is compared by.

    Strings are themselves, booleans `true`/`false`, numbers their canonical decimal text,
    so the filter value 1 matches the property 1, 1.0 or "1", and `true` matches True.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return format_decimal(parse_decimal(value))
    raise ValueError(f"must be a string, number or boolean, got {type(value).__name__}")


DecimalValue = Annotated[Decimal, BeforeValidator(parse_decimal)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(_non_negative)]
PositiveDecimal = Annotated[Decimal, BeforeValidator(_positive)]
Percent = Annotated[Decimal, BeforeValidator(_percent)]
Fraction = Annotated[Decimal, BeforeValidator(_fraction)]
Share = Annotated[Decimal, BeforeValidator(parse_share)]
Count = Annotated[int, BeforeValidator(_count)]
ValueText = Annotated[str, BeforeValidator(value_text)]
