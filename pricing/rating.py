"""Rating: a plan and a period's usage into invoice lines, a subtotal, tax and a total.

Each line is rounded once, half-up, to the currency's minor unit; the subtotal is the sum of
the rounded lines, so an invoice always adds up. The JSON shapes are those of CONTRACTS.md
(`meter quote --json`); invoices reuse the line shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pricing.aggregations import aggregate, samples
from pricing.charges import (
    TIERED_MODELS,
    ChargeResult,
    EventAmount,
    MetricUsage,
    TierLine,
    price_charge,
)
from pricing.events import EventLike
from pricing.money import exact_arithmetic, format_decimal, format_money, round_money
from pricing.periods import Period
from pricing.plans import Plan


@dataclass(frozen=True)
class Line:
    """One invoice line: "base_fee", "usage" (one per charge) or "minimum_true_up".

    `amount` is already rounded to the currency's minor unit; usage lines also carry what was
    priced (`metric`, `model`, `quantity`) and how (`result`, with tiers and details).
    """

    kind: str
    amount: Decimal
    metric: str | None = None
    model: str | None = None
    quantity: Decimal | None = None
    result: ChargeResult | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The CONTRACTS.md line: `{"kind", "amount"}`, usage lines with metric, model,
        quantity and (tiered models) tiers; `included`/`billable` when units were included,
        `details` when the model reports any."""
        if self.kind != "usage":
            return {"kind": self.kind, "amount": format(self.amount, "f")}
        line: dict[str, Any] = {"kind": self.kind, "metric": self.metric, "model": self.model}
        if self.name is not None:
            line["name"] = self.name
        line["quantity"] = format_decimal(self.quantity or Decimal(0))
        result = self.result
        if result is not None:
            if result.included:
                line["included"] = format_decimal(result.included)
                line["billable"] = format_decimal(result.billable)
            if self.model in TIERED_MODELS:
                line["tiers"] = [_tier_json(tier) for tier in result.tiers]
            if result.details:
                line["details"] = dict(result.details)
        line["amount"] = format(self.amount, "f")
        return line


@dataclass(frozen=True)
class Quote:
    """What the invoice for some usage under a plan comes to."""

    plan: str
    currency: str
    usage: dict[str, Decimal]
    lines: tuple[Line, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal

    def to_json(self) -> dict[str, Any]:
        """The `meter quote --json` document: amounts with the currency's minor unit digits,
        usage quantities unrounded."""
        return {
            "plan": self.plan,
            "currency": self.currency,
            "usage": {metric: format_decimal(qty) for metric, qty in self.usage.items()},
            "lines": [line.to_json() for line in self.lines],
            "subtotal": format_money(self.subtotal, self.currency),
            "tax": format_money(self.tax, self.currency),
            "total": format_money(self.total, self.currency),
        }


def rate(
    plan: Plan,
    usage: Mapping[str, MetricUsage],
    *,
    base_fee_factor: Decimal = Decimal(1),
    charge_results: Mapping[int, ChargeResult] | None = None,
) -> Quote:
    """Price a period's usage under `plan`.

    A base fee line (× `base_fee_factor`, which proration sets below 1), one usage line per
    charge (a metric without usage counts as 0), and, when the plan has a minimum spend, a
    true-up line of max(0, minimum × factor − the other lines). Tax is the rounded subtotal
    × `tax_rate`, itself rounded. `charge_results` gives charges (by index) already priced
    elsewhere: the live path prices percentage charges from their own mergeable state.
    """
    currency = plan.currency
    with exact_arithmetic():
        lines = [Line("base_fee", round_money(plan.base_fee * base_fee_factor, currency))]
        for index, charge in enumerate(plan.charges):
            metric_usage = usage.get(charge.metric, MetricUsage(Decimal(0)))
            priced = (charge_results or {}).get(index)
            result = priced if priced is not None else price_charge(charge, metric_usage)
            lines.append(
                Line(
                    kind="usage",
                    amount=round_money(result.amount, currency),
                    metric=charge.metric,
                    model=charge.model,
                    quantity=metric_usage.quantity,
                    result=result,
                    name=charge.name,
                )
            )
        if plan.minimum_spend is not None:
            minimum = round_money(plan.minimum_spend * base_fee_factor, currency)
            spent = sum((line.amount for line in lines), start=Decimal(0))
            true_up = max(minimum - spent, Decimal(0))
            lines.append(Line("minimum_true_up", round_money(true_up, currency)))
        subtotal = round_money(sum((line.amount for line in lines), start=Decimal(0)), currency)
        tax = round_money(subtotal * plan.tax_rate, currency)
        total = subtotal + tax
    return Quote(
        plan=plan.code,
        currency=currency,
        usage={key: usage.get(key, MetricUsage(Decimal(0))).quantity for key in plan.metrics},
        lines=tuple(lines),
        subtotal=subtotal,
        tax=tax,
        total=total,
    )


def usage_from_events(
    plan: Plan, events: Iterable[EventLike], period: Period
) -> dict[str, MetricUsage]:
    """Each plan metric's usage in `period`, from raw events: the aggregated quantity and,
    for metrics with a percentage charge, every event's amount in time order."""
    events = list(events)
    per_event = {charge.metric for charge in plan.charges if charge.model == "percentage"}
    usage: dict[str, MetricUsage] = {}
    for key, metric in plan.metrics.items():
        quantity = aggregate(key, metric, events, period)
        amounts: tuple[EventAmount, ...] | None = None
        if key in per_event:
            amounts = tuple(
                (ts, event_id, value)
                for ts, event_id, value in samples(key, metric, events, period)
                if isinstance(value, Decimal)
            )
        usage[key] = MetricUsage(quantity, amounts)
    return usage


def _tier_json(tier: TierLine) -> dict[str, Any]:
    line: dict[str, Any] = {
        "tier": tier.tier,
        "quantity": format_decimal(tier.quantity),
        "unit_amount": format_decimal(tier.unit_amount),
        "flat_amount": format_decimal(tier.flat_amount),
        "amount": format_decimal(tier.amount),
    }
    if tier.rate_percent is not None:
        line["rate_percent"] = format_decimal(tier.rate_percent)
    return line
