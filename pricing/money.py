"""Money: currencies, exact decimal parsing, rounding and canonical formatting.

Every amount in Meterline is a `decimal.Decimal`. Values are parsed once, at the edge (plan
files, events, JSON), by `to_decimal`, which never lets a binary float leak in, and they are
rounded once, per invoice line, by `round_money` (half-up to the currency's minor unit).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from types import MappingProxyType

from pricing.errors import UserError, echo

#: Precision used for exact sums and products. Quantities have at most 24 significant digits
#: (NUMERIC(30,6)) and prices a handful more, so 100 digits never rounds a sum or a product of
#: two such values: the result is exact, whatever the caller's decimal context.
EXACT_PRECISION = 100

_TWO_DIGITS = (
    "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP "
    "GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE "
    "SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES "
    "WST XAD XCD XCG YER ZAR ZMW ZWG"
)
_ZERO_DIGITS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DIGITS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DIGITS = "CLF UYW"

#: Every active ISO 4217 code (list one, funds included; codes whose minor unit is "N.A.",
#: such as XAU or XDR, are not money one can bill in) -> number of minor unit digits.
CURRENCIES: Mapping[str, int] = MappingProxyType(
    {
        code: digits
        for codes, digits in (
            (_TWO_DIGITS, 2),
            (_ZERO_DIGITS, 0),
            (_THREE_DIGITS, 3),
            (_FOUR_DIGITS, 4),
        )
        for code in codes.split()
    }
)


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Run decimal sums and products with enough digits that they are never rounded."""
    with localcontext() as context:
        context.prec = EXACT_PRECISION
        yield


def minor_unit(currency: str) -> int:
    """Number of digits after the decimal point of `currency` (USD 2, JPY 0, KWD 3)."""
    try:
        return CURRENCIES[currency]
    except KeyError:
        raise ValueError(f"unknown ISO 4217 currency {echo(currency)}") from None


#: The context `round_money` quantizes in when EXACT_PRECISION digits hold the result (nearly
#: always): built once, where a `localcontext` per call cost most of pricing a line.
_ROUNDING = Context(prec=EXACT_PRECISION, rounding=ROUND_HALF_UP)
_QUANTA = {digits: Decimal(1).scaleb(-digits) for digits in set(CURRENCIES.values())}


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit, half-up (away from zero at exactly .5)."""
    digits = minor_unit(currency)
    if amount.is_finite() and amount.adjusted() + digits + 2 <= EXACT_PRECISION:
        rounded = amount.quantize(_QUANTA[digits], context=_ROUNDING)
        return rounded.copy_abs() if rounded.is_zero() else rounded
    with localcontext() as context:
        context.prec = max(EXACT_PRECISION, amount.adjusted() + digits + 2)
        rounded = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def parse_decimal(value: object) -> Decimal:
    """Parse a finite decimal; raise ValueError whose message is the bare reason.

    Floats are read through their shortest repr (`Decimal(str(x))`), so 0.1 is 0.1, not
    0.1000000000000000055511151231257827.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {echo(value)}")
        result = Decimal(str(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {echo(value)}") from None
    else:
        raise ValueError(f"must be a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"must be a finite number, got {echo(value)}")
    return result


def to_decimal(value: object, *, field: str) -> Decimal:
    """Parse a finite decimal from str, int, Decimal or float; errors start with `field`."""
    try:
        return parse_decimal(value)
    except ValueError as error:
        raise UserError(field, str(error)) from None


def format_decimal(value: Decimal) -> str:
    """Canonical text of an unrounded value: no exponent, no trailing zeros ("900", "0.01")."""
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_money(value: Decimal, currency: str) -> str:
    """The rounded amount with exactly the currency's minor unit digits ("1150.00", "1150")."""
    return format(round_money(value, currency), "f")
