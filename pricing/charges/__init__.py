"""Charge models: one module per `model:` name, all priced through one signature.

`price_charge(charge, usage)` looks the model up in `CHARGE_MODELS`; a new model is a new
module plus one line in each table below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from pricing.charges import graduated, graduated_percentage, package, percentage, standard, volume
from pricing.charges.base import ChargeResult, EventAmount, MetricUsage, TierLine
from pricing.charges.graduated import GraduatedCharge
from pricing.charges.graduated_percentage import GraduatedPercentageCharge
from pricing.charges.package import PackageCharge
from pricing.charges.percentage import PercentageCharge, PercentageState
from pricing.charges.standard import StandardCharge
from pricing.charges.tiers import PercentageTier, Tier
from pricing.charges.volume import VolumeCharge

__all__ = [
    "CHARGE_MODELS",
    "PERCENTAGE_MODELS",
    "TIERED_MODELS",
    "AnyCharge",
    "Charge",
    "ChargeResult",
    "EventAmount",
    "GraduatedCharge",
    "GraduatedPercentageCharge",
    "MetricUsage",
    "PackageCharge",
    "PercentageCharge",
    "PercentageState",
    "PercentageTier",
    "StandardCharge",
    "Tier",
    "TierLine",
    "VolumeCharge",
    "price_charge",
]

AnyCharge = (
    StandardCharge
    | GraduatedCharge
    | VolumeCharge
    | PackageCharge
    | PercentageCharge
    | GraduatedPercentageCharge
)

#: A plan's charge: the model class is chosen by the `model:` key.
Charge = Annotated[AnyCharge, Field(discriminator="model")]

PriceFunction = Callable[[Any, MetricUsage], ChargeResult]

#: `model:` name -> the function that prices a charge of that model.
CHARGE_MODELS: dict[str, PriceFunction] = {
    "standard": standard.price,
    "graduated": graduated.price,
    "volume": volume.price,
    "package": package.price,
    "percentage": percentage.price,
    "graduated_percentage": graduated_percentage.price,
}

#: Models whose result lists the tiers it priced (invoice lines show them).
TIERED_MODELS = frozenset({"graduated", "volume", "graduated_percentage"})

#: Models that price amounts, not units: they take no `included`.
PERCENTAGE_MODELS = frozenset({"percentage", "graduated_percentage"})


def price_charge(charge: AnyCharge, usage: MetricUsage) -> ChargeResult:
    """Price one charge for a metric's usage over a period (the amount is unrounded)."""
    return CHARGE_MODELS[charge.model](charge, usage)
