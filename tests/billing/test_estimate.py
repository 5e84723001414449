"""`pricing.estimate`: the amounts-only estimate check_limit prices a spend cap with equals the
total `compose` writes for the segment, for any usage, proration, minimum and tax; and a
`ChargeMemo` reused over a sequence of usages (what check_limit does per customer) never
serves an amount priced for other usage or for another plan version."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.charges import ChargeResult, MetricUsage, price_charge
from pricing.estimate import ChargeMemo, estimate_total
from pricing.invoicing import PricedSegment, compose
from pricing.metering import Segment
from pricing.periods import billing_period
from pricing.plans import Plan, load_plan
from tests.billing.helpers import utc

PLAN = """
code: mixed
name: Mixed
currency: {currency}
base_fee: "49.99"
minimum_spend: "{minimum}"
tax_rate: "0.075"
metrics:
  api_calls: {{aggregation: sum}}
  requests:  {{aggregation: count}}
  seats:     {{aggregation: unique_count, field: user_id}}
  storage:   {{aggregation: max}}
  payments:  {{aggregation: sum, field: amount}}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {{up_to: 1000, unit_amount: "0"}}
      - {{up_to: 50000, unit_amount: "0.0013", flat_amount: "2.50"}}
      - {{up_to: null, unit_amount: "0.00071"}}
  - {{metric: requests, model: package, package_size: 100, package_amount: "1.25", included: 50}}
  - metric: seats
    model: volume
    tiers:
      - {{up_to: 3, unit_amount: "5.55"}}
      - {{up_to: null, unit_amount: "4.15", flat_amount: "1"}}
  - {{metric: storage, model: standard, unit_amount: "0.333", included: 5}}
  - {{metric: payments, model: percentage, rate_percent: "1.3", fixed_amount: "0.30"}}
"""

_QUANTITY = st.decimals(min_value=0, max_value=200_000, places=3)
_USAGE = st.fixed_dictionaries(
    {name: _QUANTITY for name in ("api_calls", "requests", "seats", "storage", "payments")}
)


def _plan(currency: str, minimum: str) -> Plan:
    return load_plan(PLAN.format(currency=currency, minimum=minimum))


def _segment(plan: Plan, start_day: int, version: int = 1) -> Segment:
    period = billing_period(utc(2026, 3, 1))
    start = period.start + timedelta(days=start_day)
    return Segment(plan, version, period, start, period.end)


def _composed(
    segment: Segment, usage: dict[str, MetricUsage], results: dict[int, ChargeResult]
) -> Decimal:
    priced = PricedSegment(segment, usage, results, rollup_version=1)
    return compose("c", segment.period, [priced]).total


@settings(max_examples=150, deadline=None)
@given(
    usages=st.lists(_USAGE, min_size=1, max_size=6),
    currency=st.sampled_from(["USD", "JPY", "BHD"]),
    minimum=st.sampled_from(["0", "75.00", "5000"]),
    start_day=st.integers(min_value=0, max_value=30),
)
def test_the_estimate_is_the_composed_total_and_the_memo_follows_the_usage(
    usages: list[dict[str, Decimal]], currency: str, minimum: str, start_day: int
) -> None:
    plan = _plan(currency, minimum)
    segment = _segment(plan, start_day)
    memo = ChargeMemo(plan.code, 1)
    for usage in usages:  # one memo over changing usage, as check_limit keeps per customer
        metric_usage = {name: MetricUsage(quantity) for name, quantity in usage.items()}
        # the percentage charge priced from its own state, as the live path does
        results = {4: price_charge(plan.charges[4], metric_usage["payments"])}
        expected = _composed(segment, metric_usage, results)
        assert estimate_total(segment, metric_usage, results) == expected
        assert estimate_total(segment, metric_usage, results, memo) == expected
        assert estimate_total(segment, metric_usage, results, memo) == expected  # memo hit


def test_a_memo_is_not_used_for_another_plan_version() -> None:
    cheap = load_plan(PLAN.format(currency="USD", minimum="0"))
    dear = load_plan(
        PLAN.format(currency="USD", minimum="0").replace('unit_amount: "0.333"', 'unit_amount: "9"')
    )
    usage = {name: MetricUsage(Decimal(10)) for name in cheap.metrics}
    first, second = _segment(cheap, 0, version=1), _segment(dear, 0, version=2)
    memo = ChargeMemo(cheap.code, 1)
    before = estimate_total(first, usage, {}, memo)
    assert memo.fits(first) and not memo.fits(second)
    after = estimate_total(second, usage, {}, memo)  # the same usage, a new version's prices
    assert before == _composed(first, usage, {})
    assert after == _composed(second, usage, {}) != before
