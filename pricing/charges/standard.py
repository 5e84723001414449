"""Standard pricing: one price per unit, after the included units."""

from __future__ import annotations

from typing import Literal

from pricing.charges.base import ChargeResult, MetricUsage, UnitChargeFields, billable_units
from pricing.fields import NonNegativeDecimal
from pricing.money import exact_arithmetic


class StandardCharge(UnitChargeFields):
    """`{metric: storage_gb, model: standard, unit_amount: "0.10", included: 5}`."""

    model: Literal["standard"] = "standard"
    unit_amount: NonNegativeDecimal


def price(charge: StandardCharge, usage: MetricUsage) -> ChargeResult:
    """unit_amount × (quantity − included)."""
    with exact_arithmetic():
        billable = billable_units(usage.quantity, charge.included)
        return ChargeResult(
            amount=charge.unit_amount * billable,
            quantity=usage.quantity,
            included=charge.included,
            billable=billable,
        )
