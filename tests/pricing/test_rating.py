"""Rating a period into invoice lines, and the exact `meter quote --json` document."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pricing.charges import MetricUsage
from pricing.events import Event
from pricing.periods import Period
from pricing.plans import load_plan
from pricing.rating import Line, rate, usage_from_events

D = Decimal
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"
NOVEMBER = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))

GROWTH = """
code: growth
name: Growth
currency: USD
interval: month
base_fee: "49.00"
minimum_spend: "100.00"
tax_rate: "0.10"
metrics:
  api_calls: {aggregation: sum}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 10000,  unit_amount: "0"}
      - {up_to: 100000, unit_amount: "0.01"}
      - {up_to: null,   unit_amount: "0.005", flat_amount: "0"}
"""

CONTRACT_QUOTE = {
    "plan": "growth",
    "currency": "USD",
    "usage": {"api_calls": "150000"},
    "lines": [
        {"kind": "base_fee", "amount": "49.00"},
        {
            "kind": "usage",
            "metric": "api_calls",
            "model": "graduated",
            "quantity": "150000",
            "tiers": [
                {
                    "tier": 1,
                    "quantity": "10000",
                    "unit_amount": "0",
                    "flat_amount": "0",
                    "amount": "0",
                },
                {
                    "tier": 2,
                    "quantity": "90000",
                    "unit_amount": "0.01",
                    "flat_amount": "0",
                    "amount": "900",
                },
                {
                    "tier": 3,
                    "quantity": "50000",
                    "unit_amount": "0.005",
                    "flat_amount": "0",
                    "amount": "250",
                },
            ],
            "amount": "1150.00",
        },
        {"kind": "minimum_true_up", "amount": "0.00"},
    ],
    "subtotal": "1199.00",
    "tax": "119.90",
    "total": "1318.90",
}


def plan_text(**overrides: str) -> str:
    text = GROWTH
    for old, new in overrides.items():
        text = text.replace(old, new)
    return text


def test_contract_growth_example_amounts() -> None:
    quote = rate(load_plan(GROWTH), {"api_calls": MetricUsage(D(150000))})
    base, usage, true_up = quote.lines
    assert (base.kind, base.amount) == ("base_fee", D("49.00"))
    assert (usage.kind, usage.amount, usage.metric, usage.model) == (
        "usage",
        D("1150.00"),
        "api_calls",
        "graduated",
    )
    assert (true_up.kind, true_up.amount) == ("minimum_true_up", D(0))
    assert (quote.subtotal, quote.tax, quote.total) == (D("1199.00"), D("119.90"), D("1318.90"))


def test_contract_growth_example_exact_json() -> None:
    quote = rate(load_plan(GROWTH), {"api_calls": MetricUsage(D(150000))})
    assert quote.to_json() == CONTRACT_QUOTE
    # key order as in CONTRACTS.md, for people reading the output
    assert list(quote.to_json()) == [
        "plan",
        "currency",
        "usage",
        "lines",
        "subtotal",
        "tax",
        "total",
    ]
    assert list(quote.to_json()["lines"][1]) == [
        "kind",
        "metric",
        "model",
        "quantity",
        "tiers",
        "amount",
    ]


def test_minimum_spend_true_up() -> None:
    # base 49 + 10,000 free calls = 49.00 < 100.00: a 51.00 true-up, then 10 % tax
    quote = rate(load_plan(GROWTH), {"api_calls": MetricUsage(D(10000))})
    assert [line.amount for line in quote.lines] == [D("49.00"), D("0.00"), D("51.00")]
    assert (quote.subtotal, quote.tax, quote.total) == (D("100.00"), D("10.00"), D("110.00"))


def test_metrics_without_usage_count_as_zero() -> None:
    quote = rate(load_plan(GROWTH), {})
    assert quote.usage == {"api_calls": D(0)}
    assert quote.lines[1].amount == D(0)
    assert quote.lines[2].amount == D("51.00")


def test_no_true_up_line_without_a_minimum_spend() -> None:
    plan = load_plan(plan_text(**{'minimum_spend: "100.00"\n': ""}))
    quote = rate(plan, {"api_calls": MetricUsage(D(10000))})
    assert [line.kind for line in quote.lines] == ["base_fee", "usage"]
    assert quote.subtotal == D("49.00")


def test_base_fee_factor_prorates_the_base_fee_and_the_minimum() -> None:
    quote = rate(load_plan(GROWTH), {}, base_fee_factor=D(15) / D(30))
    assert [line.amount for line in quote.lines] == [D("24.50"), D(0), D("25.50")]
    assert quote.subtotal == D("50.00")


def test_each_line_is_rounded_once_and_the_subtotal_adds_the_rounded_lines() -> None:
    plan = load_plan(
        """
code: r
name: R
currency: USD
metrics: {a: {aggregation: sum}, b: {aggregation: sum}}
charges:
  - {metric: a, model: standard, unit_amount: "0.005"}
  - {metric: b, model: standard, unit_amount: "0.005"}
tax_rate: "0.0825"
"""
    )
    quote = rate(plan, {"a": MetricUsage(D(1)), "b": MetricUsage(D(1))})
    # each 0.005 line rounds half-up to 0.01; the subtotal is 0.02, not round(0.010) = 0.01
    assert [line.amount for line in quote.lines] == [D(0), D("0.01"), D("0.01")]
    assert quote.subtotal == D("0.02")
    assert quote.tax == D("0.00")  # 0.02 × 8.25 % = 0.00165
    assert quote.lines[1].result is not None
    assert quote.lines[1].result.amount == D("0.005")  # the unrounded amount is kept


def test_jpy_has_no_minor_unit() -> None:
    plan = load_plan(
        """
code: jp
name: JP
currency: JPY
tax_rate: "0.10"
metrics: {calls: {aggregation: sum}}
charges: [{metric: calls, model: standard, unit_amount: "0.5"}]
"""
    )
    quote = rate(plan, {"calls": MetricUsage(D(2299))})
    # 1149.5 -> 1150 (half-up); tax 115.0 -> 115
    assert quote.to_json()["lines"][1]["amount"] == "1150"
    assert (quote.subtotal, quote.tax, quote.total) == (D(1150), D(115), D(1265))
    assert quote.to_json()["total"] == "1265"


def test_kwd_has_three_digits() -> None:
    plan = load_plan(
        """
code: kw
name: KW
currency: KWD
metrics: {calls: {aggregation: sum}}
charges: [{metric: calls, model: standard, unit_amount: "0.0005"}]
"""
    )
    quote = rate(plan, {"calls": MetricUsage(D(3))})
    # 0.0015 -> 0.002 half-up
    assert quote.to_json()["lines"][1]["amount"] == "0.002"
    assert quote.to_json()["subtotal"] == "0.002"
    assert quote.to_json()["lines"][0]["amount"] == "0.000"


def test_usage_line_json_shows_included_and_details_when_present() -> None:
    plan = load_plan((EXAMPLES / "growth.yaml").read_text())
    quote = rate(plan, {"requests": MetricUsage(D(2500)), "storage_gb": MetricUsage(D(12))})
    lines = {line["metric"]: line for line in quote.to_json()["lines"] if line["kind"] == "usage"}
    assert lines["requests"]["included"] == "1000"
    assert lines["requests"]["billable"] == "1500"
    assert lines["requests"]["details"]["packages"] == "2"
    assert lines["requests"]["amount"] == "10.00"
    assert "tiers" not in lines["requests"]  # package is not a tiered model
    assert lines["storage_gb"]["amount"] == "0.70"
    assert "included" not in lines["api_calls"]


def test_named_charge_shows_its_name() -> None:
    line = Line("usage", D("1.00"), metric="m", model="standard", quantity=D(1), name="Calls")
    assert line.to_json()["name"] == "Calls"


def event(event_id: str, metric: str, quantity: str, day: int, **props: Any) -> Event:
    return Event(
        event_id=event_id,
        customer_id="cus_1",
        metric=metric,
        quantity=D(quantity),
        timestamp=NOVEMBER.start + timedelta(days=day),
        properties=props,
    )


def test_usage_from_events_then_rate_the_growth_example() -> None:
    plan = load_plan((EXAMPLES / "growth.yaml").read_text())
    events = [
        event("c1", "api_calls", "100000", 1, region="eu"),
        event("c2", "api_calls", "50000", 2, region="us"),
        event("s1", "storage_gb", "12", 3),
        event("s2", "storage_gb", "8", 4),
        event("g1", "storage_level", "30", 15),  # 30 GB for the second half: 15 GB-months
        *(event(f"r{i}", "requests", "1", 5) for i in range(1500)),
        event("late", "api_calls", "999999", 40),  # after the period
    ]
    usage = usage_from_events(plan, events, NOVEMBER)
    assert {key: u.quantity for key, u in usage.items()} == {
        "api_calls": D(150000),
        "requests": D(1500),
        "storage_gb": D(12),
        "gb_hours": D(15),
        "eu_calls": D(100000),
    }
    quote = rate(plan, usage)
    amounts = {line.metric: line.amount for line in quote.lines if line.kind == "usage"}
    assert amounts == {
        "api_calls": D("1150.00"),
        "storage_gb": D("0.70"),  # (12 - 5) × 0.10
        "requests": D("5.00"),  # 500 billable -> 1 package
        "gb_hours": D("0.30"),  # 15 × 0.02
        "eu_calls": D("100.00"),  # 100000 × 0.001
    }
    assert quote.subtotal == D("1305.00")  # 49 + 1255.00
    assert quote.total == D("1435.50")


def test_usage_from_events_feeds_percentage_charges_each_event() -> None:
    plan = load_plan((EXAMPLES / "payments.yaml").read_text())
    amounts = ["100", "100", "100", "1000", "10"]
    events = [event(f"p{i}", "payments", "1", i, amount=a) for i, a in enumerate(amounts)]
    usage = usage_from_events(plan, reversed(events), NOVEMBER)
    assert usage["payments"].quantity == D(1310)
    assert usage["payments"].events is not None
    assert [e[2] for e in usage["payments"].events] == [D(a) for a in amounts]  # time order
    assert usage["payouts"].events is None
    quote = rate(plan, usage)
    assert quote.lines[1].amount == D("13.45")  # as in test_charges' worked example
    assert quote.lines[2].amount == D("2.00")  # graduated_percentage at 0: tier 1's flat
