"""Alert rules: which thresholds a customer's plan (and its overrides) watches, and which of
them a period's usage and estimated bill have reached. Pure: no I/O.

Three kinds of rule:

- `usage`: a share of a metric's included usage (`pricing.plans.included_usage`, the number
  `meter usage` shows). Per metric: the customer's override for that metric, else the
  customer's override for every metric, else the metric's `alerts` in the plan, else the plan's
  `alerts`, else 80 %, 95 %, 100 %. A metric with no included usage has no usage rule.
- `spend`: an amount of the period's estimated bill (`spend_alerts`, or the override).
- `limit`: the metric's hard limit (`limit.reached`), when the plan or an override sets one.

A rule is identified by (kind, metric, threshold, basis): `basis` is the allowance a usage
share was computed against, so the same share on a plan with the same allowance is the same
rule (a plan change does not fire it twice), while a plan with a larger allowance has rules of
its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pricing.money import format_decimal
from pricing.plans import Plan, included_usage

DEFAULT_SHARES = (Decimal("0.8"), Decimal("0.95"), Decimal("1"))

#: The override key that applies to every metric of the plan (a metric name never is empty).
EVERY_METRIC = ""

TOPICS = {
    "usage": "usage.threshold_reached",
    "spend": "spend.threshold_reached",
    "limit": "limit.reached",
}


@dataclass(frozen=True)
class AlertOverrides:
    """A customer's own thresholds. `usage` maps a metric (or EVERY_METRIC) to its shares (an
    empty tuple: off); `spend` replaces the plan's spend alerts when it is not None."""

    usage: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)
    spend: tuple[Decimal, ...] | None = None

    @property
    def empty(self) -> bool:
        return not self.usage and self.spend is None


NO_OVERRIDES = AlertOverrides()


@dataclass(frozen=True, order=True)
class Rule:
    """One threshold: it is reached when the metric's used quantity (or the estimated bill,
    for `spend`) is at least `level`."""

    kind: str
    metric: str | None
    threshold: Decimal
    basis: Decimal | None
    level: Decimal
    #: What identifies the rule within a customer's period: (kind, metric, threshold, basis).
    key: tuple[str, str | None, Decimal, Decimal | None] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.kind, self.metric, self.threshold, self.basis))

    @property
    def topic(self) -> str:
        return TOPICS[self.kind]

    def label(self) -> str:
        """'80%' for a usage share, the amount for spend and limits."""
        if self.kind == "usage":
            return f"{format_decimal(self.threshold * 100)}%"
        return format_decimal(self.threshold)


@dataclass(frozen=True)
class RuleSet:
    usage: tuple[Rule, ...]
    spend: tuple[Rule, ...]
    limits: tuple[Rule, ...]

    @property
    def empty(self) -> bool:
        return not (self.usage or self.spend or self.limits)

    @property
    def all(self) -> tuple[Rule, ...]:
        return self.usage + self.limits + self.spend


def usage_shares(plan: Plan, metric: str, overrides: AlertOverrides) -> tuple[Decimal, ...]:
    """The shares of included usage watched for `metric` (see the module docstring)."""
    for key in (metric, EVERY_METRIC):
        if key in overrides.usage:
            return overrides.usage[key]
    definition = plan.metrics.get(metric)
    if definition is not None and definition.alerts is not None:
        return definition.alerts
    return plan.alerts if plan.alerts is not None else DEFAULT_SHARES


def spend_amounts(plan: Plan, overrides: AlertOverrides) -> tuple[Decimal, ...]:
    if overrides.spend is not None:
        return overrides.spend
    return plan.spend_alerts or ()


def rules_for(
    plan: Plan,
    overrides: AlertOverrides = NO_OVERRIDES,
    hard_limits: Mapping[str, Decimal] | None = None,
) -> RuleSet:
    """Every rule a customer on `plan` has, in the order they fire: per metric ascending."""
    usage: list[Rule] = []
    for metric in plan.metrics:
        included = included_usage(plan, metric)
        if included <= 0:
            continue
        for share in sorted(usage_shares(plan, metric, overrides)):
            usage.append(Rule("usage", metric, share, included, share * included))
    limits = [
        Rule("limit", metric, limit, None, limit)
        for metric, limit in sorted((hard_limits or {}).items())
        if metric in plan.metrics
    ]
    spend = [Rule("spend", None, a, None, a) for a in sorted(spend_amounts(plan, overrides))]
    return RuleSet(tuple(usage), tuple(spend), tuple(limits))


def reached(rules: RuleSet, used: Mapping[str, Decimal], spend: Decimal | None) -> list[Rule]:
    """The rules that `used` (per metric) and `spend` (the estimated bill; None when it was not
    priced) have reached, in firing order: usage and limits per metric ascending, then spend."""
    found = [
        rule
        for rule in rules.usage + rules.limits
        if rule.metric is not None and used.get(rule.metric, Decimal(0)) >= rule.level
    ]
    found.sort(key=lambda rule: (rule.metric or "", rule.level, rule.kind != "usage"))
    if spend is not None:
        found += [rule for rule in rules.spend if spend >= rule.level]
    return found
