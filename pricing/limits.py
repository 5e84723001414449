"""Overage control, pure: hard limits, throttling shares and spend caps, and the decision.

A plan may limit each metric (`limits: {api_calls: {hard_limit: 1000000, throttle_at:
"0.95"}}`) and cap the estimated bill (`spend_cap: "5000.00"`); a customer's overrides beat
the plan field by field. `decide` turns a customer's usage, before and after the quantity a
request would add, into the answer `check_limit` gives.

The boundary: a request is allowed while what it brings usage to stays AT OR BELOW the limit
(`used + quantity == hard_limit` is allowed, one unit more is not), and likewise for the spend
cap (an estimated bill equal to the cap is allowed). Throttling starts when that prospective
usage reaches `throttle_at` × the metric's included usage.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pricing.fields import NonNegativeDecimal, Share
from pricing.money import format_decimal, format_money

Reason = Literal["hard_limit", "spend_cap"]


class MetricLimits(BaseModel):
    """A metric's limits in a plan file (or a customer's override of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hard_limit: NonNegativeDecimal | None = None  # units per period
    throttle_at: Share | None = None  # share of the included usage


@dataclass(frozen=True)
class LimitOverrides:
    """A customer's own limits: each field that is set beats the plan's."""

    metrics: Mapping[str, MetricLimits]
    spend_cap: Decimal | None = None

    @classmethod
    def none(cls) -> LimitOverrides:
        return cls({}, None)


NO_OVERRIDES = LimitOverrides.none()


@dataclass(frozen=True)
class EffectiveLimits:
    """What applies to one customer × metric: the plan's fields with the overrides on top."""

    metric: str
    included: Decimal
    hard_limit: Decimal | None
    throttle_at: Decimal | None  # the share
    spend_cap: Decimal | None

    @property
    def throttle_units(self) -> Decimal | None:
        """The usage from which requests are throttled (share × included)."""
        return None if self.throttle_at is None else self.throttle_at * self.included

    def to_json(self, currency: str) -> dict[str, Any]:
        units = self.throttle_units
        return {
            "metric": self.metric,
            "included": format_decimal(self.included),
            "hard_limit": None if self.hard_limit is None else format_decimal(self.hard_limit),
            "throttle_at": None if self.throttle_at is None else format_decimal(self.throttle_at),
            "throttle_units": None if units is None else format_decimal(units),
            "spend_cap": None if self.spend_cap is None else format_money(self.spend_cap, currency),
        }


def effective_limits(
    metric: str,
    included: Decimal,
    plan_limits: Mapping[str, MetricLimits],
    plan_spend_cap: Decimal | None,
    overrides: LimitOverrides = NO_OVERRIDES,
) -> EffectiveLimits:
    planned = plan_limits.get(metric) or MetricLimits()
    own = overrides.metrics.get(metric) or MetricLimits()
    return EffectiveLimits(
        metric=metric,
        included=included,
        hard_limit=own.hard_limit if own.hard_limit is not None else planned.hard_limit,
        throttle_at=own.throttle_at if own.throttle_at is not None else planned.throttle_at,
        spend_cap=overrides.spend_cap if overrides.spend_cap is not None else plan_spend_cap,
    )


@dataclass(frozen=True)
class Pending:
    """What a process recorded for a customer × event name and has not seen ingested:
    `count` events summing to `total`, of which `batches` (id, count, total) were sent."""

    count: int = 0
    total: Decimal = Decimal(0)
    batches: tuple[tuple[str, int, Decimal], ...] = ()

    def without(self, seen: Collection[str]) -> Pending:
        count, total = self.count, self.total
        for batch_id, n, amount in self.batches:
            if batch_id in seen:
                count, total = count - n, total - amount
        return Pending(max(count, 0), max(total, Decimal(0)))


@dataclass(frozen=True)
class LimitDecision:
    """`check_limit`'s answer. `used` counts the live counters plus what this process
    recorded and has not yet seen ingested (`pending`); `remaining` is the units left under
    `limit` (under `included` when there is no hard limit, as before limits existed)."""

    customer_id: str
    metric: str
    allowed: bool
    reason: Reason | None
    throttle: bool
    used: Decimal
    included: Decimal
    limit: Decimal | None
    remaining: Decimal
    resets_at: datetime
    quantity: Decimal = Decimal(1)
    pending: Decimal = Decimal(0)
    estimated_total: Decimal | None = None  # with the quantity; only when a spend cap applies
    spend_cap: Decimal | None = None
    currency: str = ""
    throttle_units: Decimal | None = None  # the usage from which `throttle` is true

    @property
    def exceeded(self) -> bool:
        """Usage has reached the included units (what `check_limit` answered before limits)."""
        return self.used >= self.included

    def retry_after(self, now: datetime) -> int:
        """Seconds until the period resets, for an HTTP `Retry-After` header (at least 1)."""
        return max(1, int((self.resets_at - now).total_seconds() + 0.999))

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "customer_id": self.customer_id,
            "metric": self.metric,
            "quantity": format_decimal(self.quantity),
            "allowed": self.allowed,
            "reason": self.reason,
            "throttle": self.throttle,
            "used": format_decimal(self.used),
            "pending": format_decimal(self.pending),
            "included": format_decimal(self.included),
            "limit": None if self.limit is None else format_decimal(self.limit),
            "throttle_units": (
                None if self.throttle_units is None else format_decimal(self.throttle_units)
            ),
            "remaining": format_decimal(self.remaining),
            "resets_at": self.resets_at.isoformat(),
        }
        if self.spend_cap is not None and self.estimated_total is not None:
            document["spend_cap"] = format_money(self.spend_cap, self.currency)
            document["estimated_total"] = format_money(self.estimated_total, self.currency)
        return document


def decide(
    customer_id: str,
    limits: EffectiveLimits,
    *,
    used: Decimal,
    prospective: Decimal,
    resets_at: datetime,
    quantity: Decimal = Decimal(1),
    pending: Decimal = Decimal(0),
    estimated_total: Decimal | None = None,
    currency: str = "",
) -> LimitDecision:
    """The answer for a request that would take usage from `used` to `prospective` and the
    estimated bill to `estimated_total` (None when no spend cap applies)."""
    reason: Reason | None = None
    if limits.hard_limit is not None and prospective > limits.hard_limit:
        reason = "hard_limit"
    elif (
        limits.spend_cap is not None
        and estimated_total is not None
        and estimated_total > limits.spend_cap
    ):
        reason = "spend_cap"
    units = limits.throttle_units
    ceiling = limits.hard_limit if limits.hard_limit is not None else limits.included
    return LimitDecision(
        customer_id=customer_id,
        metric=limits.metric,
        allowed=reason is None,
        reason=reason,
        throttle=units is not None and prospective >= units,
        used=used,
        included=limits.included,
        limit=limits.hard_limit,
        remaining=max(ceiling - used, Decimal(0)),
        resets_at=resets_at,
        quantity=quantity,
        pending=pending,
        estimated_total=estimated_total if limits.spend_cap is not None else None,
        spend_cap=limits.spend_cap,
        currency=currency,
        throttle_units=units,
    )
