"""The estimated bill of one segment, amounts only: the total `compose` gives for that segment
alone, without building the lines' documents. `check_limit` prices a spend cap with it on
every call, so it is kept to the arithmetic: the prorated base fee, each charge's amount
rounded once, the minimum true-up, the rounded subtotal and the tax on it, as
`pricing.invoicing.price_segment` and `compose` do (a test holds the two equal).

`ChargeMemo` remembers each charge's last input and amount for one segment: a charge whose
metric's usage has not changed since the previous estimate is not priced again. Exact by
construction: a charge's amount is a function of the charge and its usage, and the memo is
only used for the plan version it was filled under.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal

from pricing.charges import ChargeResult, MetricUsage, price_charge
from pricing.invoicing import prorate, segment_days
from pricing.metering import Segment
from pricing.money import exact_arithmetic, round_money

_NO_USAGE = MetricUsage(Decimal(0))


class ChargeMemo:
    """Per charge (by its index in one plan version): the last usage priced and the rounded
    amount. Thread-safe; each entry is replaced whole."""

    def __init__(self, plan_code: str, plan_version: int) -> None:
        self.plan = (plan_code, plan_version)
        self._lock = threading.Lock()
        self._amounts: dict[int, tuple[MetricUsage, Decimal]] = {}

    def fits(self, segment: Segment) -> bool:
        """Was this memo filled under `segment`'s plan version?"""
        return self.plan == (segment.plan.code, segment.plan_version)

    def get(self, index: int, usage: MetricUsage) -> Decimal | None:
        with self._lock:
            found = self._amounts.get(index)
        return found[1] if found is not None and found[0] == usage else None

    def put(self, index: int, usage: MetricUsage, amount: Decimal) -> None:
        with self._lock:
            self._amounts[index] = (usage, amount)


def estimate_total(
    segment: Segment,
    usage: Mapping[str, MetricUsage],
    charge_results: Mapping[int, ChargeResult],
    memo: ChargeMemo | None = None,
) -> Decimal:
    """The total of the invoice `compose` would write for this one segment's usage (and its
    percentage charges' results, by charge index), rounded to the currency's minor unit."""
    plan = segment.plan
    currency = plan.currency
    days, period_days = segment_days(segment)
    if memo is not None and not memo.fits(segment):
        memo = None
    with exact_arithmetic():
        spent = prorate(plan.base_fee, days, period_days, currency)
        for index, charge in enumerate(plan.charges):
            result = charge_results.get(index)
            if result is not None:
                spent += round_money(result.amount, currency)
                continue
            metric_usage = usage.get(charge.metric, _NO_USAGE)
            amount = memo.get(index, metric_usage) if memo is not None else None
            if amount is None:
                amount = round_money(price_charge(charge, metric_usage).amount, currency)
                if memo is not None:
                    memo.put(index, metric_usage, amount)
            spent += amount
        if plan.minimum_spend is not None:
            minimum = prorate(plan.minimum_spend, days, period_days, currency)
            spent += round_money(max(minimum - spent, Decimal(0)), currency)
        subtotal = round_money(spent, currency)
        tax = round_money(spent * plan.tax_rate, currency)
        return round_money(subtotal + tax, currency)
