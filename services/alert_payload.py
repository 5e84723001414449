"""The rows an alert that fires is recorded with: its `alerts` row and its outbox payload
(customer, metric, threshold, used, included, period, estimated bill, idempotency key).

Built for all of a customer's rules that fire in one batch at once: what belongs to the
customer's segment (its period, plan, currency, bill) is formatted once for all of them, and
what belongs to a rule (its threshold's text and label) once per rule in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pricing.alerts import Rule
from pricing.metering import Segment
from pricing.money import format_decimal, format_money
from pricing.plans import included_usage
from services.alert_estimate import Estimate
from storage import alerts as store


def idempotency_key(customer_id: str, rule: Rule, period_start: datetime) -> str:
    """Stable across redeliveries, workers and retries: the alert's unique key as text."""
    return _key(customer_id, _texts(rule), period_start.isoformat())


def _key(customer_id: str, texts: _RuleTexts, period_start: str) -> str:
    return f"alert:{customer_id}:{texts.key_part}:{period_start}"


class _RuleTexts:
    __slots__ = ("key_part", "label", "limit", "threshold")

    def __init__(self, rule: Rule) -> None:
        self.threshold = format_decimal(rule.threshold)
        basis = format_decimal(rule.basis) if rule.basis is not None else "-"
        self.key_part = f"{rule.kind}:{rule.metric or '-'}:{self.threshold}:{basis}"
        self.label = rule.label()
        self.limit = format_decimal(rule.level) if rule.kind == "limit" else None


_rule_texts: dict[Rule, _RuleTexts] = {}
_lock = threading.Lock()
_LIMIT = 10_000  # rules remembered (each plan and override set has a handful)


def _texts(rule: Rule) -> _RuleTexts:
    texts = _rule_texts.get(rule)
    if texts is None:
        texts = _RuleTexts(rule)
        with _lock:
            if len(_rule_texts) >= _LIMIT:
                _rule_texts.clear()
            _rule_texts[rule] = texts
    return texts


def new_alerts(
    customer_id: str, segment: Segment, priced: Estimate, rules: Sequence[Rule], now: datetime
) -> list[store.NewAlert]:
    """The rows of the customer's `rules` that fired in `segment` (priced as `priced`)."""
    plan, period = segment.plan, segment.period
    currency = plan.currency
    period_start = period.start.isoformat()
    label = period.label
    shared: dict[str, Any] = {
        "period": {"start": period_start, "end": period.end.isoformat(), "label": label},
        "estimated_bill": format_money(priced.estimated_total, currency),
        "currency": currency,
        "triggered_at": now.isoformat(),
    }
    alerts = []
    for rule in rules:
        texts = _texts(rule)
        metric = rule.metric if rule.metric in priced.used else None
        used = priced.used[metric] if metric is not None else None
        included = included_usage(plan, metric) if metric is not None else None
        payload: dict[str, Any] = {
            "idempotency_key": _key(customer_id, texts, period_start),
            "type": rule.topic,
            "customer_id": customer_id,
            "plan": plan.code,
            "metric": rule.metric,
            "kind": rule.kind,
            "threshold": texts.threshold,
            "threshold_label": texts.label,
            "used": format_decimal(used) if used is not None else None,
            "included": format_decimal(included) if included is not None else None,
            "limit": texts.limit,
            **shared,
        }
        alerts.append(
            store.NewAlert(
                customer_id=customer_id,
                metric=rule.metric,
                kind=rule.kind,
                threshold=rule.threshold,
                basis=rule.basis,
                period_start=period.start,
                period_end=period.end,
                period_label=label,
                plan_code=plan.code,
                value=used if used is not None else priced.estimated_total,
                estimated_total=priced.estimated_total,
                currency=currency,
                triggered_at=now,
                topic=rule.topic,
                payload=payload,
            )
        )
    return alerts
