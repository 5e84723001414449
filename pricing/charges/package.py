"""Package pricing: whole packages of `package_size` units, a partial package rounded up."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Literal

from pricing.charges.base import ChargeResult, MetricUsage, UnitChargeFields, billable_units
from pricing.fields import NonNegativeDecimal, PositiveDecimal
from pricing.money import exact_arithmetic, format_decimal


class PackageCharge(UnitChargeFields):
    """`{metric: requests, model: package, package_size: 1000, package_amount: "5.00"}`."""

    model: Literal["package"] = "package"
    package_size: PositiveDecimal
    package_amount: NonNegativeDecimal


def price(charge: PackageCharge, usage: MetricUsage) -> ChargeResult:
    """ceil((quantity − included) / package_size) × package_amount."""
    with exact_arithmetic():
        billable = billable_units(usage.quantity, charge.included)
        packages = (billable / charge.package_size).to_integral_value(rounding=ROUND_CEILING)
        packages = packages + Decimal(0)  # -0 (from 0 / size) becomes 0
        return ChargeResult(
            amount=packages * charge.package_amount,
            quantity=usage.quantity,
            included=charge.included,
            billable=billable,
            details={
                "packages": format_decimal(packages),
                "package_size": format_decimal(charge.package_size),
                "package_amount": format_decimal(charge.package_amount),
            },
        )
