"""What the `meter alerts` commands and `meter usage` ask about alerts: per-customer overrides
(validated), the rules a customer has now, and the alerts fired.

The evaluation itself is `services.alerts` (inline in ingest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pricing.alerts import EVERY_METRIC, NO_OVERRIDES, RuleSet
from pricing.errors import UserError, echo
from pricing.fields import parse_share, plan_number
from pricing.money import format_decimal, format_money
from pricing.periods import period_for_label
from services.alerts import customer_rules, forget_overrides
from services.usage import UsageReport
from storage import alerts as store
from storage.catalog.cache import catalog, customer_context
from storage.errors import NotFound


def parse_shares(text: str, option: str) -> tuple[Decimal, ...]:
    """'0.5,0.8,1' -> shares of included usage; refused as `option: reason`."""
    values = _split(text, option)
    shares = []
    for value in values:
        try:
            shares.append(parse_share(value))
        except ValueError as error:
            raise UserError(option, str(error)) from None
    return _distinct(shares, option)


def parse_amounts(text: str, option: str) -> tuple[Decimal, ...]:
    """'50.00,100' -> amounts of the estimated bill; refused as `option: reason`."""
    amounts = []
    for value in _split(text, option):
        try:
            number = plan_number(value)
        except ValueError as error:
            raise UserError(option, str(error)) from None
        if number <= 0:
            raise UserError(option, f"an amount above 0, got {echo(value)}")
        amounts.append(number)
    return _distinct(amounts, option)


def _split(text: str, option: str) -> list[str]:
    values = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not value for value in values):
        raise UserError(option, f"a comma-separated list of numbers, got {echo(text)}")
    return values


def _distinct(values: Sequence[Decimal], option: str) -> tuple[Decimal, ...]:
    if len(set(values)) != len(values):
        raise UserError(option, "a threshold is listed twice")
    return tuple(sorted(values))


@dataclass(frozen=True)
class OverrideChange:
    metric: str | None = None
    shares: tuple[Decimal, ...] | None = None  # () turns usage alerts off
    spend: tuple[Decimal, ...] | None = None  # () turns spend alerts off
    clear: bool = False


def apply_overrides(customer_id: str, change: OverrideChange) -> dict[str, Any]:
    """Store a customer's overrides (validated against its current plan); return its rules."""
    context = customer_context(customer_id)
    segment = catalog.segment(context, datetime.now(UTC))
    if change.metric is not None and (segment is None or change.metric not in segment.plan.metrics):
        plan = segment.plan.code if segment else "none"
        raise UserError("--metric", f"{echo(change.metric)} is not a metric of plan {plan!r}")
    if change.clear:
        if change.shares is not None or change.spend is not None:
            raise UserError("--clear", "clears overrides: give no thresholds with it")
        if change.metric is not None:
            store.clear_overrides(customer_id, "usage", change.metric)
        else:
            store.clear_overrides(customer_id)
    elif change.shares is None and change.spend is None:
        raise UserError(
            "", "nothing to set: give --thresholds, --off, --spend, --spend-off or --clear"
        )
    if change.metric is not None and change.spend is not None:
        raise UserError("--metric", "spend alerts are per plan, not per metric")
    if change.shares is not None:
        store.set_override(customer_id, "usage", change.shares, change.metric or EVERY_METRIC)
    if change.spend is not None:
        store.set_override(customer_id, "spend", change.spend)
    forget_overrides([customer_id])
    return rules_json(customer_id)


def rules_json(customer_id: str, at: datetime | None = None) -> dict[str, Any]:
    """The customer's rules on the plan in force at `at` (now), with what has fired."""
    context = customer_context(customer_id)
    segment = catalog.segment(context, at or datetime.now(UTC))
    if segment is None:
        raise NotFound(f"customer {customer_id!r} has no plan now")
    overrides = store.read_overrides([customer_id]).get(customer_id)
    rules: RuleSet = customer_rules(segment, overrides or NO_OVERRIDES, customer_id)
    fired = {
        (a.kind, a.metric, a.threshold, a.basis)
        for a in store.fired_in(customer_id, segment.period.start)
    }
    return {
        "customer_id": customer_id,
        "plan": segment.plan.code,
        "period": segment.period.label,
        "overrides": {
            "usage": {
                (metric or "*"): [format_decimal(v) for v in values]
                for metric, values in (overrides.usage.items() if overrides else [])
            },
            "spend": (
                [format_decimal(v) for v in overrides.spend]
                if overrides and overrides.spend is not None
                else None
            ),
        },
        "rules": [
            {
                "kind": rule.kind,
                "metric": rule.metric,
                "threshold": format_decimal(rule.threshold),
                "label": rule.label(),
                "at": format_decimal(rule.level),
                "fired": rule.key in fired,
            }
            for rule in rules.all
        ],
    }


def list_alerts(customer_id: str | None, period: str | None) -> list[store.StoredAlert]:
    """Alerts fired, oldest first; `period` is a label, YYYY-MM (monthly) or YYYY (yearly)."""
    if period is not None:
        yearly = len(period) == 4 and period.isascii() and period.isdigit()
        period_for_label(period, interval="year" if yearly else "month")  # UserError otherwise
    return store.find(customer_id=customer_id, period_label=period)


def alert_json(alert: store.StoredAlert) -> dict[str, Any]:
    currency = alert.currency or "USD"
    return {
        "id": alert.id,
        "customer_id": alert.customer_id,
        "kind": alert.kind,
        "metric": alert.metric,
        "threshold": format_decimal(alert.threshold),
        "basis": format_decimal(alert.basis) if alert.basis is not None else None,
        "value": format_decimal(alert.value),
        "period": alert.period_label,
        "period_start": alert.period_start.isoformat(),
        "period_end": alert.period_end.isoformat() if alert.period_end else None,
        "plan": alert.plan_code,
        "estimated_bill": (
            format_money(alert.estimated_total, currency)
            if alert.estimated_total is not None
            else None
        ),
        "currency": alert.currency,
        "triggered_at": alert.triggered_at.isoformat(),
        "outbox_id": alert.outbox_id,
    }


def fired_this_period(report: UsageReport) -> dict[str, list[str]]:
    """For `meter usage`: the thresholds fired in the report's period, per metric ('' for spend
    alerts), as the canonical decimal text (usage shares, spend amounts, hard limits)."""
    found: dict[str, list[str]] = {}
    for alert in store.fired_in(report.customer_id, report.segment.period.start):
        key = alert.metric or ""
        text = format_decimal(alert.threshold)
        if alert.kind == "limit":
            text = f"limit {text}"
        if text not in found.setdefault(key, []):
            found[key].append(text)
    return found


def alerts_of_period(customer_id: str, period_start: datetime) -> list[dict[str, Any]]:
    """The alerts fired in one of a customer's billing periods (`meter alerts list --json`'s
    fields), in the order they fired."""
    return [alert_json(alert) for alert in store.fired_in(customer_id, period_start)]
