"""What every charge model shares: its input (`MetricUsage`), its result and its common fields.

Each model module (`standard`, `graduated`, ...) exposes a pydantic charge class built on
`ChargeFields` and one function `price(charge, usage) -> ChargeResult`. Results are unrounded:
rounding happens once, per invoice line, in `pricing.rating`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from pricing.fields import NonNegativeDecimal

#: One event's contribution, as the percentage model needs it: (timestamp, event_id, amount).
EventAmount = tuple[datetime, str, Decimal]


@dataclass(frozen=True)
class MetricUsage:
    """A metric's aggregated quantity over a period and, for percentage charges, its events.

    `events` holds the per-event amounts in time order; `None` means only the total is known.
    """

    quantity: Decimal
    events: tuple[EventAmount, ...] | None = None


@dataclass(frozen=True)
class TierLine:
    """How much of the quantity one tier priced (`tier` counts from 1, as on an invoice)."""

    tier: int
    quantity: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal
    rate_percent: Decimal | None = None


@dataclass(frozen=True)
class ChargeResult:
    """A priced charge: `amount` is unrounded; `quantity` is the aggregated usage, `included`
    the free units taken off it and `billable` what the model actually priced."""

    amount: Decimal
    quantity: Decimal
    included: Decimal
    billable: Decimal
    tiers: tuple[TierLine, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)


class ChargeFields(BaseModel):
    """Fields of every charge: the metric it prices and an optional label for invoices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1)
    name: str | None = None


class UnitChargeFields(ChargeFields):
    """Charges that price units, and so can give some of them away (`included`)."""

    included: NonNegativeDecimal = Decimal(0)


def billable_units(quantity: Decimal, included: Decimal) -> Decimal:
    """The units left to price once the included ones are taken off; never below 0."""
    return max(quantity - included, Decimal(0))
