"""Pydantic field types for plan and event values, read without ever passing through float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator

from pricing.money import format_decimal, parse_decimal


def _non_negative(value: object) -> Decimal:
    number = parse_decimal(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _positive(value: object) -> Decimal:
    number = parse_decimal(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _percent(value: object) -> Decimal:
    number = parse_decimal(value)
    if not 0 <= number <= 100:
        raise ValueError("must be between 0 and 100")
    return number


def _fraction(value: object) -> Decimal:
    number = parse_decimal(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def _count(value: object) -> int:
    number = parse_decimal(value)
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
Count = Annotated[int, BeforeValidator(_count)]
ValueText = Annotated[str, BeforeValidator(value_text)]
