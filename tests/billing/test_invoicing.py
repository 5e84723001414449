"""Invoice composition (pure): proration by local days, per-segment pricing, tax, adjustments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from pricing.charges import MetricUsage
from pricing.invoicing import (
    BilledLine,
    PricedSegment,
    adjustment_lines,
    compose,
    price_segment,
    prorate,
    segment_days,
)
from pricing.metering import Segment
from pricing.periods import billing_period, period_for_label
from pricing.plans import Plan, load_plan
from pricing.rating import rate
from tests.billing.helpers import BIG, FLOOR, SMALL, utc


def priced(
    plan: Plan,
    start: datetime,
    end: datetime,
    usage: dict[str, str] | None = None,
    *,
    timezone: str = "UTC",
    version: int = 1,
) -> PricedSegment:
    period = billing_period(start, timezone=timezone)
    segment = Segment(plan, version, period, start, end, timezone)
    quantities = {k: MetricUsage(Decimal(v)) for k, v in (usage or {}).items()}
    return PricedSegment(segment, quantities, {}, rollup_version=1)


def test_started_on_15_march_pays_17_of_31_days_of_the_base_fee() -> None:
    small = load_plan(SMALL)
    segment = priced(small, utc(2026, 3, 15), utc(2026, 4, 1))
    assert segment_days(segment.segment) == (17, 31)
    draft = compose("c", segment.segment.period, [segment])
    base = draft.lines[0]
    assert base.kind == "base_fee"
    assert base.amount == Decimal("54.84")  # 100 × 17/31 = 54.8387…
    assert base.document["proration"] == {"days": 17, "period_days": 31}


def test_upgrade_on_15_january_prorates_each_plan_and_prices_its_own_usage() -> None:
    small, big = load_plan(SMALL), load_plan(BIG)
    change = utc(2026, 1, 15, 10)  # mid-day: the whole 15th belongs to the new plan
    first = priced(small, utc(2026, 1, 1), change, {"api_calls": "300"})
    second = priced(big, change, utc(2026, 2, 1), {"api_calls": "1500"})
    draft = compose("c", first.segment.period, [first, second])
    lines = [(line.kind, line.document.get("plan"), line.amount) for line in draft.lines]
    assert lines[0] == ("base_fee", "small", Decimal("45.16"))  # 14/31 × 100
    assert ("base_fee", "big", Decimal("109.68")) in lines  # 17/31 × 200
    api = [line for line in draft.lines if line.metric == "api_calls"]
    # small: 100 free, 200 × 0.10; big: 1000 free, 500 × 0.05. Pooled under either plan it
    # would be 1700 × 0.10 = 170 or 800 × 0.05 = 40.
    assert [line.amount for line in api] == [Decimal("20.00"), Decimal("25.00")]
    assert draft.subtotal == Decimal("199.84")
    assert draft.tax == Decimal("19.98")
    assert draft.total == Decimal("219.82")
    assert draft.plan_code == "big"
    assert draft.to_json()["usage"]["api_calls"] == "1800"


def test_a_full_single_segment_is_exactly_the_quote() -> None:
    small = load_plan(SMALL)
    usage = {"api_calls": "150000", "storage_gb": "12.5", "seats": "4"}
    segment = priced(small, utc(2026, 4, 1), utc(2026, 5, 1), usage)
    draft = compose("c", segment.segment.period, [segment])
    quote = rate(small, segment.usage).to_json()
    document = draft.to_json()
    assert document["lines"] == quote["lines"]
    for key in ("plan", "currency", "usage", "subtotal", "tax", "total"):
        assert document[key] == quote[key], key


def test_proration_rounds_an_exact_half_cent_up() -> None:
    # 0.15 × 1/30 = 0.005 exactly: half-up gives 0.01. A factor 1/30 computed first
    # (0.0333…3) and then multiplied gives 0.004999…5, which rounds down.
    assert prorate(Decimal("0.15"), 1, 30, "USD") == Decimal("0.01")
    cheap = load_plan(FLOOR.replace("minimum_spend", "base_fee").replace('"50.00"', '"0.15"'))
    naive = rate(cheap, {}, base_fee_factor=Decimal(1) / Decimal(30))
    assert naive.lines[0].amount == Decimal("0.00")
    april = priced(cheap, utc(2026, 4, 30), utc(2026, 5, 1))
    assert price_segment(april)[0].amount == Decimal("0.01")


def test_minimum_spend_is_prorated_with_the_segment() -> None:
    floor = load_plan(FLOOR)
    segment = priced(floor, utc(2026, 3, 15), utc(2026, 4, 1), {"api_calls": "100"})
    lines = price_segment(segment)
    true_up = lines[-1]
    assert true_up.kind == "minimum_true_up"
    # 50 × 17/31 = 27.42; usage 10.00 -> 17.42
    assert true_up.amount == Decimal("17.42")
    assert true_up.document["proration"] == {"days": 17, "period_days": 31}


def test_days_follow_the_customer_timezone_across_dst() -> None:
    small = load_plan(SMALL)
    march = period_for_label("2026-03", timezone="America/New_York")
    assert march.start == utc(2026, 3, 1, 5) and march.end == utc(2026, 4, 1, 4)
    # Started on 8 March, the day clocks moved forward: 24 local days of 31.
    start = utc(2026, 3, 8, 5)
    segment = Segment(small, 1, march, start, march.end, "America/New_York")
    assert segment_days(segment) == (24, 31)


def billed_from(lines: list) -> list[BilledLine]:  # type: ignore[type-arg]
    return [
        BilledLine(
            line.segment_start,
            line.adjusts or line.kind,
            line.metric,
            line.model,
            line.quantity or Decimal(0),
            line.amount,
        )
        for line in lines
    ]


def test_late_usage_bills_only_the_difference_per_line() -> None:
    small = load_plan(SMALL)
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    then = price_segment(priced(small, start, end, {"api_calls": "300", "storage_gb": "7"}))
    now = price_segment(priced(small, start, end, {"api_calls": "340", "storage_gb": "7"}))
    period = billing_period(start)
    lines = adjustment_lines(period, now, billed_from(then))
    assert len(lines) == 1
    (line,) = lines
    assert line.kind == "adjustment" and line.adjusts == "usage"
    assert line.metric == "api_calls" and line.quantity == Decimal(40)
    assert line.amount == Decimal("4.00")
    assert line.document["for_period"] == "2026-01"
    assert line.document["description"] == "Adjustment for 2026-01: late usage of api_calls"
    assert adjustment_lines(period, now, [*billed_from(then), *billed_from(lines)]) == []


def test_late_usage_under_a_minimum_moves_usage_into_the_true_up() -> None:
    floor = load_plan(FLOOR)
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    then = price_segment(priced(floor, start, end, {"api_calls": "200"}))  # 20 + true-up 30
    now = price_segment(priced(floor, start, end, {"api_calls": "300"}))  # 30 + true-up 20
    lines = adjustment_lines(billing_period(start), now, billed_from(then))
    by_kind = {line.adjusts: line.amount for line in lines}
    assert by_kind == {"usage": Decimal("10.00"), "minimum_true_up": Decimal("-10.00")}
    draft = compose(
        "c",
        billing_period(utc(2026, 2, 1)),
        [priced(floor, utc(2026, 2, 1), utc(2026, 3, 1))],
        lines,
    )
    # the customer already paid the minimum for January: the adjustments net to zero
    assert sum(line.amount for line in draft.lines if line.kind == "adjustment") == 0


def test_adjustments_are_taxed_at_the_rate_of_the_plan_that_priced_them() -> None:
    small, floor = load_plan(SMALL), load_plan(FLOOR)  # tax 10 % and 0 %
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    then = price_segment(priced(small, start, end, {"api_calls": "200"}))
    now = price_segment(priced(small, start, end, {"api_calls": "300"}))
    adjustments = adjustment_lines(billing_period(start), now, billed_from(then))
    february = priced(floor, utc(2026, 2, 1), utc(2026, 3, 1), {"api_calls": "1000"})
    draft = compose("c", february.segment.period, [february], adjustments)
    assert draft.subtotal == Decimal("110.00")  # 100.00 usage + 10.00 adjustment
    assert draft.tax == Decimal("1.00")  # only the adjustment, at small's 10 %
    assert draft.total == Decimal("111.00")


def test_one_invoice_has_one_currency() -> None:
    small = load_plan(SMALL)
    euro = load_plan(SMALL.replace("code: small", "code: euro").replace("USD", "EUR"))
    change = utc(2026, 1, 10)
    with pytest.raises(ValueError, match="mixes currencies"):
        compose(
            "c",
            billing_period(change),
            [priced(small, utc(2026, 1, 1), change), priced(euro, change, utc(2026, 2, 1))],
        )
