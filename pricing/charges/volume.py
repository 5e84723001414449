"""Volume pricing: every unit at the price of the tier the total reaches (Stripe `tiers_mode:
volume`), plus that tier's flat amount. A total can cost less after crossing a bound."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from pricing.charges.base import (
    ChargeResult,
    MetricUsage,
    TierLine,
    UnitChargeFields,
    billable_units,
)
from pricing.charges.tiers import Tier, check_tiers, volume_tier
from pricing.money import exact_arithmetic


class VolumeCharge(UnitChargeFields):
    """`{metric: seats, model: volume, tiers: [{up_to: 5, unit_amount: "12"}, ...]}`."""

    model: Literal["volume"] = "volume"
    tiers: list[Tier]

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Self:
        check_tiers([tier.up_to for tier in self.tiers])
        return self


def price(charge: VolumeCharge, usage: MetricUsage) -> ChargeResult:
    """billable × unit_amount + flat_amount of the tier the billable quantity reaches."""
    with exact_arithmetic():
        billable = billable_units(usage.quantity, charge.included)
        index = volume_tier(billable, [tier.up_to for tier in charge.tiers])
        tier = charge.tiers[index]
        line = TierLine(
            tier=index + 1,
            quantity=billable,
            unit_amount=tier.unit_amount,
            flat_amount=tier.flat_amount,
            amount=billable * tier.unit_amount + tier.flat_amount,
        )
        return ChargeResult(
            amount=line.amount,
            quantity=usage.quantity,
            included=charge.included,
            billable=billable,
            tiers=(line,),
        )
