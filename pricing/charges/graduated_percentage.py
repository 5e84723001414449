"""Graduated percentage pricing: graduated tiers over the aggregated amount, each with its own
rate, each entered tier adding its flat amount (Lago's `graduated_percentage`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Self

from pydantic import model_validator

from pricing.charges.base import ChargeFields, ChargeResult, MetricUsage, TierLine
from pricing.charges.tiers import PercentageTier, check_tiers, graduated_split
from pricing.money import exact_arithmetic


class GraduatedPercentageCharge(ChargeFields):
    """`{metric: payouts, model: graduated_percentage, tiers: [{up_to: 1000, rate_percent:
    "1", flat_amount: "2"}, {up_to: null, rate_percent: "0.5"}]}`."""

    model: Literal["graduated_percentage"] = "graduated_percentage"
    tiers: list[PercentageTier]

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Self:
        check_tiers([tier.up_to for tier in self.tiers])
        return self


def price(charge: GraduatedPercentageCharge, usage: MetricUsage) -> ChargeResult:
    """Σ over the entered tiers of (amount in the tier × rate_percent / 100 + flat_amount)."""
    with exact_arithmetic():
        billable = max(usage.quantity, Decimal(0))
        split = graduated_split(billable, [tier.up_to for tier in charge.tiers])
        lines = tuple(
            TierLine(
                tier=index + 1,
                quantity=units,
                unit_amount=tier.rate_percent / 100,
                flat_amount=tier.flat_amount,
                amount=units * tier.rate_percent / 100 + tier.flat_amount,
                rate_percent=tier.rate_percent,
            )
            for index, (tier, units) in enumerate(zip(charge.tiers, split, strict=True))
            if units is not None
        )
        return ChargeResult(
            amount=sum((line.amount for line in lines), start=Decimal(0)),
            quantity=usage.quantity,
            included=Decimal(0),
            billable=billable,
            tiers=lines,
        )
