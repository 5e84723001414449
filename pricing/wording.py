"""Invoice lines in plain words, amounts and quantities as a customer reads them.

Turns the line JSON of an invoice (the `meter quote --json` shape) and the charge that priced it
into rows such as "API calls — 90,000 at 0.01": a description, a detail, quantity, unit price
and amount, each amount with its currency's minor unit digits and thousands separators; tiers
become rows of their own ("10,000 – 100,000: 90,000 at 0.01"), their amounts with all their
digits (a tier may price 3 units at 0.005: 0.015; the line is what is rounded). Lines that
bill nothing and mean nothing to a customer (a zero base fee, a zero minimum true-up) are left
out. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pricing.charges import Charge
from pricing.money import format_decimal, minor_unit, round_money

#: Words written in capitals when a metric key is turned into a label ("api_calls" → "API calls").
_ACRONYMS = frozenset(
    "api gb tb mb kb gib tib mib sms mms url urls id ids eu uk us cpu gpu vcpu ai llm ip".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Row:
    """One printed row. `sub` rows (tiers) belong to the row above them."""

    kind: str
    description: str
    amount: str
    detail: str | None = None
    quantity: str = ""
    unit_price: str = ""
    sub: tuple[Row, ...] = field(default_factory=tuple)


def group_digits(text: str) -> str:
    """'1234567.5' → '1,234,567.5' (a leading '-' kept)."""
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    grouped = f"{int(whole):,}" if whole else "0"
    return f"{sign}{grouped}.{fraction}" if fraction else f"{sign}{grouped}"


def money(value: str | Decimal | None, currency: str) -> str:
    """An amount rounded to the currency's minor unit, with separators: '1,318.90', '1,150'
    for JPY, '-12.00' for a credit."""
    if value is None:
        return ""
    return group_digits(format(round_money(Decimal(value), currency), "f"))


def unit_price(value: str | Decimal, currency: str) -> str:
    """A price per unit with at least the currency's minor unit digits and all of its own:
    '0.00', '0.01', '0.005', '5.00' (USD); '3' (JPY)."""
    amount = Decimal(value)
    exponent = amount.normalize().as_tuple().exponent
    own = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    digits = max(minor_unit(currency), own)
    text = format(amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP), "f")
    return group_digits(text)


def quantity(value: str | Decimal | None) -> str:
    """A quantity as counted, unrounded, with separators: '90,000', '12.5'."""
    if value is None or value == "":
        return ""
    return group_digits(format_decimal(Decimal(value)))


def percent(rate: Decimal) -> str:
    """A fraction as a percentage: 0.1 → '10%', 0.075 → '7.5%'."""
    return f"{format_decimal(rate * 100)}%"


def metric_label(metric: str) -> str:
    """A metric key in words: 'api_calls' → 'API calls', 'storage_gb' → 'Storage GB'."""
    words = [w for w in metric.replace("-", "_").replace(".", "_").split("_") if w]
    shown = [w.upper() if w.lower() in _ACRONYMS else w.lower() for w in words] or [metric]
    first = shown[0]
    shown[0] = first if first.isupper() else first[:1].upper() + first[1:]
    return " ".join(shown)


def line_label(line: Mapping[str, Any]) -> str:
    """What a usage line bills: the charge's name, else its metric in words."""
    name = line.get("name")
    return str(name) if name else metric_label(str(line.get("metric") or ""))


def describe_line(
    line: Mapping[str, Any],
    currency: str,
    *,
    charge: Charge | None = None,
    plan_name: str | None = None,
    interval: str = "month",
    minimum_spend: Decimal | None = None,
) -> Row | None:
    """The printed row of an invoice line (None for a line that is left out). `charge` is the
    plan's charge that priced a usage line (for unit prices and tier bounds), `plan_name` and
    `interval` name the base fee, `minimum_spend` the true-up."""
    kind = line["kind"]
    amount = money(line["amount"], currency)
    if kind == "usage":
        return _usage_row(line, currency, charge, amount)
    if kind == "adjustment":
        text = str(line.get("description", "Adjustment"))
        if line.get("metric"):
            text = text.replace(f"of {line['metric']}", f"of {line_label(line)}")
        return Row(kind, text, amount, quantity=quantity(line.get("quantity")))
    if Decimal(line["amount"]).is_zero():
        return None
    detail = _proration(line)
    if kind == "base_fee":
        every = {"month": "monthly", "year": "yearly"}.get(interval, interval)
        title = f"{plan_name} plan — {every} base fee" if plan_name else f"{every} base fee"
        return Row(kind, title[:1].upper() + title[1:], amount, detail=detail)
    if kind == "minimum_true_up":
        text = "Minimum spend true-up"
        if minimum_spend is not None:
            text += f" (minimum {money(minimum_spend, currency)} per {interval})"
        return Row(kind, text, amount, detail=detail)
    return Row(kind, kind.replace("_", " ").capitalize(), amount, detail=detail)


def _proration(line: Mapping[str, Any]) -> str | None:
    proration = line.get("proration")
    if not proration:
        return None
    return f"for {proration['days']} of {proration['period_days']} days"


def _usage_row(line: Mapping[str, Any], currency: str, charge: Charge | None, amount: str) -> Row:
    label = line_label(line)
    used = Decimal(line.get("quantity") or 0)
    billable = Decimal(line.get("billable", line.get("quantity")) or 0)
    detail = None
    if line.get("included") and Decimal(line["included"]):
        detail = f"{quantity(used)} used, first {quantity(line['included'])} included"
    model = line.get("model")
    if model == "standard" and charge is not None and hasattr(charge, "unit_amount"):
        price = unit_price(charge.unit_amount, currency)
        return Row(
            "usage",
            f"{label} — {quantity(billable)} at {price}",
            amount,
            detail=detail,
            quantity=quantity(billable),
            unit_price=price,
        )
    if model == "package":
        return _package_row(line, currency, label, amount, detail)
    if model == "percentage":
        return _percentage_row(line, currency, charge, label, amount)
    tiers = _tier_rows(line, currency, charge)
    if model == "volume" and len(tiers) == 1:
        only = tiers[0]
        return Row(
            "usage",
            f"{label} — {only.description}",
            amount,
            detail=detail,
            quantity=only.quantity,
            unit_price=only.unit_price,
        )
    shown = quantity(used) if model != "graduated_percentage" else money(used, currency)
    return Row(
        "usage", f"{label} — {shown}", amount, detail=detail, quantity=shown, sub=tuple(tiers)
    )


def _package_row(
    line: Mapping[str, Any], currency: str, label: str, amount: str, detail: str | None
) -> Row:
    details = line.get("details", {})
    packages = quantity(details.get("packages", "0"))
    size = quantity(details.get("package_size", "1"))
    price = unit_price(details.get("package_amount", "0"), currency)
    noun = "package" if packages == "1" else "packages"
    return Row(
        "usage",
        f"{label} — {packages} {noun} of {size} at {price}",
        amount,
        detail=detail or f"{quantity(line.get('quantity'))} used",
        quantity=packages,
        unit_price=price,
    )


def _percentage_row(
    line: Mapping[str, Any], currency: str, charge: Charge | None, label: str, amount: str
) -> Row:
    details = line.get("details", {})
    paid = int(details.get("paid_events", "0"))
    free = int(details.get("free_events_used", "0"))
    billable = money(line.get("billable", line.get("quantity", "0")), currency)
    text = f"{label} — {billable}"
    if charge is not None and hasattr(charge, "rate_percent"):
        text = f"{label} — {format_decimal(charge.rate_percent)}% of {billable}"
        fixed = getattr(charge, "fixed_amount", Decimal(0))
        if fixed:
            text += f" + {unit_price(fixed, currency)} on each of {paid} paid events"
    parts = [f"{int(details.get('events', paid + free))} events"]
    if free:
        parts.append(f"{free} free")
    bounds = _event_bounds(charge, currency)
    if bounds:
        parts.append(bounds)
    return Row("usage", text, amount, detail=", ".join(parts), quantity=str(paid))


def _event_bounds(charge: Charge | None, currency: str) -> str | None:
    low = getattr(charge, "per_event_min", None)
    high = getattr(charge, "per_event_max", None)
    if low is not None and high is not None:
        return f"each between {unit_price(low, currency)} and {unit_price(high, currency)}"
    if low is not None:
        return f"each at least {unit_price(low, currency)}"
    if high is not None:
        return f"each at most {unit_price(high, currency)}"
    return None


def _tier_rows(line: Mapping[str, Any], currency: str, charge: Charge | None) -> list[Row]:
    bounds: Sequence[Decimal | None] = [t.up_to for t in getattr(charge, "tiers", [])]
    percentage = line.get("model") == "graduated_percentage"
    rows = []
    for tier in line.get("tiers", []):
        index = int(tier["tier"]) - 1
        span = _span(bounds, index, currency if percentage else None)
        flat = Decimal(tier.get("flat_amount") or 0)
        if percentage:
            what = money(tier["quantity"], currency)
            price = f"{format_decimal(Decimal(tier.get('rate_percent') or 0))}%"
            text = f"{price} of {what}"
        else:
            what = quantity(tier["quantity"])
            price = unit_price(tier["unit_amount"], currency)
            text = f"{what} at {price}"
        if flat:
            text += f" + {unit_price(flat, currency)} flat"
        if span and line.get("model") == "volume":
            text += f" (the price for a total {span.replace('first', 'up to')})"
        elif span:
            text = f"{span[:1].upper()}{span[1:]}: {text}"
        rows.append(
            Row(
                "tier",
                text,
                unit_price(tier["amount"], currency),
                quantity=what,
                unit_price=price,
            )
        )
    return rows


def _span(bounds: Sequence[Decimal | None], index: int, currency: str | None) -> str | None:
    """The range a tier covers (`up_to` is inclusive): 'first 10,000', 'above 10,000 up to
    100,000', 'above 100,000'."""
    if not 0 <= index < len(bounds):
        return None

    def show(value: Decimal) -> str:
        return money(value, currency) if currency else quantity(value)

    lower = bounds[index - 1] if index > 0 else None
    upper = bounds[index] if index < len(bounds) - 1 else None
    if lower is None and upper is None:
        return "all"
    if lower is None:
        assert upper is not None  # noqa: S101 (invariant for mypy, not validation)
        return f"first {show(upper)}"
    if upper is None:
        return f"above {show(lower)}"
    return f"above {show(lower)} up to {show(upper)}"
