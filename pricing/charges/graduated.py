"""Graduated pricing: each unit is priced in the tier it falls in (Stripe `tiers_mode:
graduated`); every tier entered adds its flat amount, the first one even at quantity 0."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Self

from pydantic import model_validator

from pricing.charges.base import (
    ChargeResult,
    MetricUsage,
    TierLine,
    UnitChargeFields,
    billable_units,
)
from pricing.charges.tiers import Tier, check_tiers, graduated_split
from pricing.money import exact_arithmetic


class GraduatedCharge(UnitChargeFields):
    """`{metric: api_calls, model: graduated, tiers: [{up_to: 10000, unit_amount: "0"}, ...]}`."""

    model: Literal["graduated"] = "graduated"
    tiers: list[Tier]

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Self:
        check_tiers([tier.up_to for tier in self.tiers])
        return self


def price(charge: GraduatedCharge, usage: MetricUsage) -> ChargeResult:
    """Σ over the entered tiers of (units in the tier × unit_amount + flat_amount)."""
    with exact_arithmetic():
        billable = billable_units(usage.quantity, charge.included)
        split = graduated_split(billable, [tier.up_to for tier in charge.tiers])
        lines = tuple(
            TierLine(
                tier=index + 1,
                quantity=units,
                unit_amount=tier.unit_amount,
                flat_amount=tier.flat_amount,
                amount=units * tier.unit_amount + tier.flat_amount,
            )
            for index, (tier, units) in enumerate(zip(charge.tiers, split, strict=True))
            if units is not None
        )
        return ChargeResult(
            amount=sum((line.amount for line in lines), start=Decimal(0)),
            quantity=usage.quantity,
            included=charge.included,
            billable=billable,
            tiers=lines,
        )
