"""Tier models and how a quantity falls into tiers, shared by the tiered charge models.

`up_to` is a cumulative, inclusive upper bound (`null` = no bound), as in Stripe: a tier with
`up_to: 100` after one with `up_to: 10` covers units 10 < q <= 100. The last tier may carry a
number too (Orb's bulk pricing and range packages have one): units beyond it are priced in the
last tier, so a plan never leaves usage unpriced.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from pricing.errors import PlanError
from pricing.fields import NonNegativeDecimal, Percent


class Tier(BaseModel):
    """A tier of a graduated or volume charge: a price per unit plus a flat amount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: NonNegativeDecimal | None
    unit_amount: NonNegativeDecimal = Decimal(0)
    flat_amount: NonNegativeDecimal = Decimal(0)


class PercentageTier(BaseModel):
    """A tier of a graduated_percentage charge: a rate on the amount plus a flat amount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: NonNegativeDecimal | None
    rate_percent: Percent
    flat_amount: NonNegativeDecimal = Decimal(0)


def check_tiers(bounds: Sequence[Decimal | None]) -> None:
    """Refuse tiers that are empty, out of order or open before the end."""
    errors: list[tuple[str, str]] = []
    if not bounds:
        errors.append(("tiers", "must have at least one tier"))
    last = len(bounds) - 1
    previous: Decimal | None = None
    for index, up_to in enumerate(bounds):
        path = f"tiers[{index}].up_to"
        if up_to is None and index != last:
            errors.append((path, "only the last tier may have up_to: null"))
        elif up_to is not None and previous is not None and up_to <= previous:
            errors.append((path, "tiers must be in strictly increasing order"))
        if up_to is not None:
            previous = up_to
    if errors:
        raise PlanError(errors)


def open_ended(bounds: Sequence[Decimal | None]) -> list[Decimal | None]:
    """The bounds as priced: the last tier takes every unit beyond the one before it."""
    return [*bounds[:-1], None] if bounds else []


def graduated_split(quantity: Decimal, bounds: Sequence[Decimal | None]) -> list[Decimal | None]:
    """Units of `quantity` in each tier, or None for a tier that is not entered.

    The first tier is always entered (so its flat amount is charged even at quantity 0); a
    later tier is entered once the quantity goes past the previous bound; the last tier takes
    every unit beyond the one before it, whatever its own `up_to`.
    """
    units: list[Decimal | None] = []
    lower = Decimal(0)
    for index, up_to in enumerate(open_ended(bounds)):
        if index > 0 and quantity <= lower:
            units.append(None)
            continue
        top = quantity if up_to is None else min(quantity, up_to)
        units.append(max(top - lower, Decimal(0)))
        if up_to is not None:
            lower = up_to
    return units


def volume_tier(quantity: Decimal, bounds: Sequence[Decimal | None]) -> int:
    """Index of the tier the total quantity reaches (the first whose bound holds it; the last
    tier for a quantity beyond every bound)."""
    for index, up_to in enumerate(open_ended(bounds)):
        if up_to is None or quantity <= up_to:
            return index
    raise ValueError("tiers: must have at least one tier")
