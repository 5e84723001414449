"""Invoice lines in plain words, and amounts formatted for their currency (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pricing.charges import MetricUsage
from pricing.plans import Plan, load_plan
from pricing.rating import rate
from pricing.wording import Row, describe_line, metric_label, money, percent, quantity, unit_price

PLAN = """
code: every
name: Every Model
currency: USD
base_fee: "49.00"
minimum_spend: "2000.00"
tax_rate: "0.10"
metrics:
  api_calls: {aggregation: sum}
  storage_gb: {aggregation: max}
  seats: {aggregation: sum}
  requests: {aggregation: sum}
  payments: {aggregation: sum}
  payouts: {aggregation: sum}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 10000, unit_amount: "0"}
      - {up_to: 100000, unit_amount: "0.01"}
      - {up_to: null, unit_amount: "0.005"}
  - {metric: storage_gb, model: standard, unit_amount: "0.10", included: 5}
  - metric: seats
    model: volume
    tiers: [{up_to: 5, unit_amount: "12"}, {up_to: null, unit_amount: "10", flat_amount: "20"}]
  - {metric: requests, model: package, package_size: 1000, package_amount: "5.00", included: 1000}
  - {metric: payments, model: percentage, rate_percent: "1.3", fixed_amount: "0.30",
     per_event_min: "0.50"}
  - metric: payouts
    model: graduated_percentage
    tiers: [{up_to: 1000, rate_percent: "1", flat_amount: "2"}, {up_to: null, rate_percent: "0.5"}]
"""

USAGE = {
    "api_calls": "150000",
    "storage_gb": "12.5",
    "seats": "7",
    "requests": "12345",
    "payments": "1000",
    "payouts": "3000",
}


def _rows(plan: Plan, usage: dict[str, str]) -> dict[str, Row | None]:
    """The printed row of each line of the quote, by metric (or kind for the others)."""
    quote = rate(plan, {k: MetricUsage(Decimal(v)) for k, v in usage.items()})
    lines: list[dict[str, Any]] = quote.to_json()["lines"]
    charges = iter(plan.charges)
    rows = {}
    for line in lines:
        charge = next(charges) if line["kind"] == "usage" else None
        key = line.get("metric") or line["kind"]
        rows[key] = describe_line(
            line,
            plan.currency,
            charge=charge,
            plan_name=plan.name,
            minimum_spend=plan.minimum_spend,
        )
    return rows


@pytest.fixture
def rows() -> dict[str, Row | None]:
    return _rows(load_plan(PLAN), USAGE)


def test_standard_line_says_what_was_billed_at_which_unit_price(rows: dict[str, Row]) -> None:
    storage = rows["storage_gb"]
    assert storage.description == "Storage GB — 7.5 at 0.10"
    assert storage.detail == "12.5 used, first 5 included"
    assert (storage.quantity, storage.unit_price, storage.amount) == ("7.5", "0.10", "0.75")


def test_graduated_line_has_one_row_per_tier_with_its_range(rows: dict[str, Row]) -> None:
    calls = rows["api_calls"]
    assert calls.description == "API calls — 150,000"
    assert calls.amount == "1,150.00"
    assert [tier.description for tier in calls.sub] == [
        "First 10,000: 10,000 at 0.00",
        "Above 10,000 up to 100,000: 90,000 at 0.01",
        "Above 100,000: 50,000 at 0.005",
    ]
    assert [(t.quantity, t.unit_price, t.amount) for t in calls.sub] == [
        ("10,000", "0.00", "0.00"),
        ("90,000", "0.01", "900.00"),
        ("50,000", "0.005", "250.00"),
    ]


def test_volume_line_names_the_price_every_unit_got(rows: dict[str, Row]) -> None:
    seats = rows["seats"]
    assert seats.description == "Seats — 7 at 10.00 + 20.00 flat (the price for a total above 5)"
    assert (seats.quantity, seats.unit_price, seats.amount) == ("7", "10.00", "90.00")


def test_package_line_in_packages_not_jargon(rows: dict[str, Row]) -> None:
    requests = rows["requests"]
    assert requests.description == "Requests — 12 packages of 1,000 at 5.00"
    assert requests.detail == "12,345 used, first 1,000 included"
    assert "package_size" not in repr(requests) and requests.amount == "60.00"


def test_percentage_line_gives_the_rate_the_base_and_the_fee(rows: dict[str, Row]) -> None:
    payments = rows["payments"]
    assert payments.description == ("Payments — 1.3% of 1,000.00 + 0.30 on each of 1 paid events")
    assert payments.detail == "1 events, each at least 0.50"
    assert payments.amount == "13.30"


def test_graduated_percentage_line_has_a_rate_per_tier(rows: dict[str, Row]) -> None:
    payouts = rows["payouts"]
    assert payouts.description == "Payouts — 3,000.00"
    assert [tier.description for tier in payouts.sub] == [
        "First 1,000.00: 1% of 1,000.00 + 2.00 flat",
        "Above 1,000.00: 0.5% of 2,000.00",
    ]
    assert payouts.amount == "22.00"


def test_base_fee_and_minimum_true_up_in_words(rows: dict[str, Row]) -> None:
    assert rows["base_fee"].description == "Every Model plan — monthly base fee"
    true_up = rows["minimum_true_up"]
    assert true_up.description == "Minimum spend true-up (minimum 2,000.00 per month)"
    assert true_up.amount == "614.95"  # 2000 − (49 + 1150 + 0.75 + 90 + 60 + 13.30 + 22)


def test_no_base_fee_or_true_up_line_when_they_bill_nothing() -> None:
    plan = load_plan(
        PLAN.replace('base_fee: "49.00"\n', "").replace('minimum_spend: "2000.00"\n', "")
    )
    rows = _rows(plan, USAGE)
    assert rows["base_fee"] is None  # the quote has the line (0.00); the document does not
    assert "minimum_true_up" not in rows
    covered = _rows(load_plan(PLAN.replace('"2000.00"', '"10.00"')), USAGE)
    assert covered["minimum_true_up"] is None  # a minimum already reached adds nothing


def test_amounts_follow_the_currency_minor_unit() -> None:
    assert money("1318.9", "USD") == "1,318.90"
    assert money("1234567.005", "USD") == "1,234,567.01"  # half-up
    assert money("1150", "JPY") == "1,150"
    assert money("1150.5", "JPY") == "1,151"
    assert money("-5500", "JPY") == "-5,500"
    assert money("12.3456", "KWD") == "12.346"
    assert money("-0.001", "USD") == "0.00"  # never "-0.00"
    assert unit_price("0", "USD") == "0.00" and unit_price("0.005", "USD") == "0.005"
    assert unit_price("3", "JPY") == "3" and unit_price("1500", "JPY") == "1,500"
    assert unit_price("0.25", "JPY") == "0.25"  # a price below the minor unit keeps its digits


def test_jpy_lines_have_no_decimals() -> None:
    plan = load_plan(PLAN.replace("currency: USD", "currency: JPY").replace('"49.00"', '"4900"'))
    rows = _rows(plan, {"api_calls": "150000", "storage_gb": "12345"})
    assert rows["base_fee"].amount == "4,900"
    assert rows["storage_gb"].description == "Storage GB — 12,340 at 0.1"
    assert rows["storage_gb"].amount == "1,234"
    assert rows["api_calls"].sub[1].unit_price == "0.01"


def test_labels_quantities_and_rates() -> None:
    assert metric_label("api_calls") == "API calls"
    assert metric_label("gb_hours") == "GB hours"
    assert metric_label("eu_calls") == "EU calls"
    assert metric_label("seats") == "Seats"
    assert quantity("90000") == "90,000" and quantity("12.500") == "12.5"
    assert percent(Decimal("0.10")) == "10%" and percent(Decimal("0.075")) == "7.5%"
