"""Currencies, decimal parsing, half-up rounding and canonical formatting."""

from decimal import Decimal

import pytest

from pricing.money import (
    CURRENCIES,
    format_decimal,
    format_money,
    minor_unit,
    round_money,
    to_decimal,
)

D = Decimal


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2), ("INR", 2), ("BRL", 2),
        ("JPY", 0), ("KRW", 0), ("CLP", 0), ("VND", 0), ("XOF", 0), ("ISK", 0),
        ("KWD", 3), ("BHD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("IQD", 3), ("LYD", 3),
        ("CLF", 4), ("UYW", 4),
    ],
)  # fmt: skip
def test_minor_units_of_known_currencies(code: str, digits: int) -> None:
    assert CURRENCIES[code] == digits
    assert minor_unit(code) == digits


def test_currency_table_is_the_full_iso_list() -> None:
    assert len(CURRENCIES) >= 160
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in CURRENCIES)
    assert set(CURRENCIES.values()) == {0, 2, 3, 4}
    # Precious metals and units of account have no minor unit: not billable money.
    assert "XAU" not in CURRENCIES and "XDR" not in CURRENCIES and "XXX" not in CURRENCIES


def test_unknown_currency() -> None:
    with pytest.raises(ValueError, match="unknown ISO 4217 currency 'XYZ'"):
        minor_unit("XYZ")
    with pytest.raises(ValueError, match="unknown ISO 4217 currency"):
        round_money(D("1"), "usd")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "USD", "0.01"),  # exactly half: up
        ("0.025", "USD", "0.03"),  # half-even would give 0.02
        ("0.0049999", "USD", "0.00"),
        ("-0.005", "USD", "-0.01"),  # half-up is away from zero
        ("2.5", "JPY", "3"),  # half-even would give 2
        ("1149.5", "JPY", "1150"),
        ("1149.49", "JPY", "1149"),
        ("0.0005", "KWD", "0.001"),
        ("1.2345", "KWD", "1.235"),
        ("0.00005", "CLF", "0.0001"),
        ("-0.001", "USD", "0.00"),  # no negative zero
    ],
)
def test_round_money_half_up(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(D(amount), currency)
    assert str(rounded) == expected


def test_round_money_of_huge_amounts_is_exact() -> None:
    assert str(round_money(D("123456789012345678901234567890.125"), "USD")) == (
        "123456789012345678901234567890.13"
    )


def test_to_decimal_accepts_numbers_without_binary_float() -> None:
    assert to_decimal("0.10", field="x") == D("0.10")
    assert to_decimal(" 12 ", field="x") == D(12)
    assert to_decimal(7, field="x") == D(7)
    assert to_decimal(D("1.5"), field="x") == D("1.5")
    assert to_decimal(0.1, field="x") == D("0.1")  # not 0.1000000000000000055511151231257827
    assert str(to_decimal(1.1, field="x")) == "1.1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "boolean"),
        (False, "boolean"),
        ("nan", "finite"),
        ("NaN", "finite"),
        ("-Infinity", "finite"),
        ("inf", "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (D("NaN"), "finite"),
        ("abc", "not a number: 'abc'"),
        ("", "not a number"),
        ("1,5", "not a number"),
        (None, "must be a number, got NoneType"),
        ([1], "must be a number, got list"),
    ],
)
def test_to_decimal_rejects_with_the_field_name(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^unit_amount: .*" + reason):
        to_decimal(value, field="unit_amount")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("900", "900"),
        ("900.000", "900"),
        ("0.0100", "0.01"),
        ("0", "0"),
        ("0E-8", "0"),
        ("-0", "0"),
        ("1.50", "1.5"),
        ("1E+3", "1000"),
        ("-2.50", "-2.5"),
        ("0.000001", "0.000001"),
        ("1234567890123456789012345678901234.5", "1234567890123456789012345678901234.5"),
    ],
)
def test_format_decimal_is_canonical(value: str, text: str) -> None:
    assert format_decimal(D(value)) == text


@pytest.mark.parametrize(
    ("value", "currency", "text"),
    [
        ("1150", "USD", "1150.00"),
        ("1150", "JPY", "1150"),
        ("0.1", "KWD", "0.100"),
        ("1E+3", "EUR", "1000.00"),
        ("119.9", "USD", "119.90"),
        ("0.125", "USD", "0.13"),
        ("-0.001", "USD", "0.00"),
    ],
)
def test_format_money_has_exactly_the_minor_unit_digits(
    value: str, currency: str, text: str
) -> None:
    assert format_money(D(value), currency) == text
