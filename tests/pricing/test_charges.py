"""Charge models on worked examples whose numbers come from public pricing docs or are worked
out in the comment next to them."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter

from pricing.charges import (
    CHARGE_MODELS,
    AnyCharge,
    Charge,
    ChargeResult,
    GraduatedCharge,
    MetricUsage,
    PercentageCharge,
    PercentageState,
    VolumeCharge,
    price_charge,
)

D = Decimal
T0 = datetime(2026, 11, 1, tzinfo=UTC)
_CHARGE = TypeAdapter(Charge)


def charge(**fields: Any) -> AnyCharge:
    return _CHARGE.validate_python({"metric": "m", **fields})


def priced(spec: dict[str, Any], quantity: str | int) -> ChargeResult:
    return price_charge(charge(**spec), MetricUsage(D(quantity)))


# Stripe, "Tiered pricing" docs: 1-5 units at 7.00, 6-10 at 6.50, 11+ at 6.00.
STRIPE_TIERS = [
    {"up_to": 5, "unit_amount": "7.00"},
    {"up_to": 10, "unit_amount": "6.50"},
    {"up_to": None, "unit_amount": "6.00"},
]


def test_registry_has_one_function_per_model() -> None:
    assert set(CHARGE_MODELS) == {
        "standard",
        "graduated",
        "volume",
        "package",
        "percentage",
        "graduated_percentage",
    }


def test_stripe_graduated_six_units() -> None:
    # 5 × 7.00 + 1 × 6.50 = 41.50
    result = priced({"model": "graduated", "tiers": STRIPE_TIERS}, 6)
    assert result.amount == D("41.50")
    assert [(t.tier, t.quantity, t.amount) for t in result.tiers] == [
        (1, D(5), D("35.00")),
        (2, D(1), D("6.50")),
    ]


def test_stripe_graduated_across_all_tiers() -> None:
    # 5 × 7 + 5 × 6.5 + 2 × 6 = 35 + 32.5 + 12 = 79.50
    assert priced({"model": "graduated", "tiers": STRIPE_TIERS}, 12).amount == D("79.50")


def test_stripe_volume_six_units() -> None:
    # every unit at the tier the total reaches: 6 × 6.50 = 39.00
    result = priced({"model": "volume", "tiers": STRIPE_TIERS}, 6)
    assert result.amount == D("39.00")
    assert [(t.tier, t.quantity, t.unit_amount) for t in result.tiers] == [(2, D(6), D("6.50"))]


@pytest.mark.parametrize(
    ("quantity", "amount"), [(5, "35.00"), (10, "65.00"), (11, "66.00"), (1, "7.00")]
)
def test_volume_at_tier_bounds(quantity: int, amount: str) -> None:
    # up_to is inclusive: 5 units are still in tier 1, 10 in tier 2
    assert priced({"model": "volume", "tiers": STRIPE_TIERS}, quantity).amount == D(amount)


def test_volume_with_flat_amounts() -> None:
    tiers = [
        {"up_to": 10, "unit_amount": "2", "flat_amount": "5"},
        {"up_to": None, "unit_amount": "1", "flat_amount": "20"},
    ]
    # 10 units: 10 × 2 + 5 = 25; 11 units: 11 × 1 + 20 = 31 (tier 2's flat amount only)
    assert priced({"model": "volume", "tiers": tiers}, 10).amount == D(25)
    result = priced({"model": "volume", "tiers": tiers}, 11)
    assert result.amount == D(31)
    assert result.tiers[0].flat_amount == D(20)


def test_volume_total_can_fall_when_crossing_a_bound() -> None:
    tiers = [{"up_to": 100, "unit_amount": "1"}, {"up_to": None, "unit_amount": "0.5"}]
    assert priced({"model": "volume", "tiers": tiers}, 100).amount == D(100)
    assert priced({"model": "volume", "tiers": tiers}, 101).amount == D("50.5")


def test_graduated_with_flat_amount_per_tier() -> None:
    # Stripe's "flat fee + per unit" pattern: first 5 units for a flat 10.00, then 1.00 each
    # plus 5.00 once tier 2 is entered.
    tiers = [
        {"up_to": 5, "unit_amount": "0", "flat_amount": "10"},
        {"up_to": None, "unit_amount": "1", "flat_amount": "5"},
    ]
    spec = {"model": "graduated", "tiers": tiers}
    assert priced(spec, 3).amount == D(10)
    assert priced(spec, 5).amount == D(10)
    assert priced(spec, 6).amount == D(16)  # 10 + (1 × 1 + 5)
    assert priced(spec, D("5.5")).amount == D("15.5")  # half a unit enters tier 2


@pytest.mark.parametrize("model", ["graduated", "volume"])
def test_quantity_zero_charges_the_first_tier_flat_amount(model: str) -> None:
    tiers = [
        {"up_to": 5, "unit_amount": "1", "flat_amount": "10"},
        {"up_to": None, "unit_amount": "0.5", "flat_amount": "3"},
    ]
    result = priced({"model": model, "tiers": tiers}, 0)
    assert result.amount == D(10)
    assert [t.tier for t in result.tiers] == [1]


@pytest.mark.parametrize("model", ["graduated", "volume"])
def test_a_zero_first_tier_avoids_the_flat_amount_at_zero(model: str) -> None:
    tiers = [
        {"up_to": 0, "unit_amount": "0"},
        {"up_to": None, "unit_amount": "1", "flat_amount": "10"},
    ]
    assert priced({"model": model, "tiers": tiers}, 0).amount == D(0)
    assert priced({"model": model, "tiers": tiers}, 2).amount == D(12)


def test_contract_growth_tiers() -> None:
    tiers = [
        {"up_to": 10000, "unit_amount": "0"},
        {"up_to": 100000, "unit_amount": "0.01"},
        {"up_to": None, "unit_amount": "0.005", "flat_amount": "0"},
    ]
    result = priced({"model": "graduated", "tiers": tiers}, 150000)
    assert [t.quantity for t in result.tiers] == [D(10000), D(90000), D(50000)]
    assert [t.amount for t in result.tiers] == [D(0), D(900), D(250)]
    assert result.amount == D(1150)


def test_included_units_come_off_before_the_tiers() -> None:
    spec = {"model": "graduated", "tiers": STRIPE_TIERS, "included": 4}
    result = priced(spec, 10)
    # 6 billable: 5 × 7 + 1 × 6.5
    assert (result.quantity, result.included, result.billable) == (D(10), D(4), D(6))
    assert result.amount == D("41.50")
    assert priced(spec, 3).billable == D(0)  # never below 0


def test_standard() -> None:
    spec = {"model": "standard", "unit_amount": "0.10", "included": 5}
    assert priced(spec, 12).amount == D("0.70")  # (12 - 5) × 0.10
    assert priced(spec, 3).amount == D(0)
    assert priced({"model": "standard", "unit_amount": "0.08"}, "2.5").amount == D("0.2")


@pytest.mark.parametrize(
    ("quantity", "amount", "packages"),
    [(1, "0", "0"), (1000, "0", "0"), (1001, "5.00", "1"), (2000, "5.00", "1"),
     (2001, "10.00", "2"), (2500, "10.00", "2"), (0, "0", "0")],
)  # fmt: skip
def test_package_rounds_partial_packages_up_after_free_units(
    quantity: int, amount: str, packages: str
) -> None:
    spec = {
        "model": "package",
        "package_size": 1000,
        "package_amount": "5.00",
        "included": 1000,
    }
    result = priced(spec, quantity)
    assert result.amount == D(amount)
    assert result.details["packages"] == packages


# Lago-style percentage charge: 1.3 % + 0.30 per paid event, the first 3 events or 250.00
# (whichever ends first) free, each paid event at least 0.50 and at most 12.00.
LAGO_PERCENTAGE = {
    "model": "percentage",
    "rate_percent": "1.3",
    "fixed_amount": "0.30",
    "free_events": 3,
    "free_amount": "250",
    "per_event_min": "0.50",
    "per_event_max": "12.00",
}


def events(*amounts: str) -> tuple[tuple[datetime, str, Decimal], ...]:
    return tuple(
        (T0 + timedelta(minutes=i), f"evt_{i}", D(amount)) for i, amount in enumerate(amounts)
    )


def priced_events(spec: dict[str, Any], *amounts: str) -> ChargeResult:
    usage = MetricUsage(sum((D(a) for a in amounts), start=D(0)), events(*amounts))
    return price_charge(charge(**spec), usage)


def test_percentage_with_a_crossing_event() -> None:
    # 100, 100: free (200 of the 250 used). The third 100 crosses 250: it pays 1.3 % of the
    # 50 above the allowance + 0.30 = 0.95. Then 1000: 13.00 + 0.30 = 13.30, capped at
    # 12.00; 10: 0.13 + 0.30 = 0.43, raised to the 0.50 minimum. 0.95 + 12.00 + 0.50 = 13.45
    result = priced_events(LAGO_PERCENTAGE, "100", "100", "100", "1000", "10")
    assert result.amount == D("13.45")
    assert result.quantity == D(1310)
    assert result.billable == D(1060)  # 50 + 1000 + 10
    assert result.details == {"events": "5", "paid_events": "3", "free_events_used": "2"}


def test_percentage_free_events_end_first() -> None:
    # Three events of 10 use the 3 free events (only 30 of the 250); the fourth is paid:
    # 0.13 + 0.30 = 0.43 -> minimum 0.50
    result = priced_events(LAGO_PERCENTAGE, "10", "10", "10", "10")
    assert result.amount == D("0.50")
    assert result.details["free_events_used"] == "3"


def test_percentage_event_exactly_using_the_allowance_is_free() -> None:
    # 250 uses the whole free amount: free, no fixed amount, no minimum. 100 then pays
    # 1.30 + 0.30 = 1.60
    assert priced_events(LAGO_PERCENTAGE, "250", "100").amount == D("1.60")


def test_percentage_events_are_taken_in_time_order() -> None:
    spec = {**LAGO_PERCENTAGE, "free_events": 1, "free_amount": None}
    late_big = (
        (T0 + timedelta(hours=2), "b", D(1000)),
        (T0 + timedelta(hours=1), "a", D(10)),
    )
    result = price_charge(charge(**spec), MetricUsage(D(1010), late_big))
    # the earlier event (10) is the free one; 1000 pays 13.30 -> capped at 12.00
    assert result.amount == D("12.00")


def test_percentage_without_allowance_or_bounds() -> None:
    spec = {"model": "percentage", "rate_percent": "1.3", "fixed_amount": "0.30"}
    # 200 × 1.3 % + 0.30 = 2.90, per event
    assert priced_events(spec, "200").amount == D("2.90")
    assert priced_events(spec, "200", "200").amount == D("5.80")


def test_percentage_of_a_plain_quantity_is_one_event() -> None:
    spec = {"model": "percentage", "rate_percent": "2", "fixed_amount": "1"}
    assert priced(spec, 500).amount == D(11)  # 500 × 2 % + 1
    assert priced(LAGO_PERCENTAGE, 300).amount == D("0.95")  # crosses 250: 50 × 1.3 % + 0.30


def test_percentage_refund_is_priced_as_zero() -> None:
    spec = {"model": "percentage", "rate_percent": "10"}
    assert priced_events(spec, "100", "-100").amount == D(10)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("1500", "14.5"),  # 1000 × 1 % + 2 + 500 × 0.5 % = 10 + 2 + 2.5
        ("800", "10"),  # 800 × 1 % + 2
        ("0", "2"),  # first tier's flat amount, as with graduated
        ("1000", "12"),
    ],
)
def test_graduated_percentage(amount: str, expected: str) -> None:
    spec = {
        "model": "graduated_percentage",
        "tiers": [
            {"up_to": 1000, "rate_percent": "1", "flat_amount": "2"},
            {"up_to": None, "rate_percent": "0.5"},
        ],
    }
    result = priced(spec, amount)
    assert result.amount == D(expected)
    assert all(t.rate_percent is not None for t in result.tiers)


def test_charge_classes_are_chosen_by_model() -> None:
    assert isinstance(charge(model="volume", tiers=STRIPE_TIERS), VolumeCharge)
    assert isinstance(charge(model="graduated", tiers=STRIPE_TIERS), GraduatedCharge)
    assert isinstance(charge(model="percentage", rate_percent=1), PercentageCharge)


# A last tier with a numeric `up_to` (Orb's bulk pricing and range packages end with one): the
# units beyond it are priced in the last tier, never left unpriced.
BOUNDED_TIERS = [
    {"up_to": 5, "unit_amount": "7.00"},
    {"up_to": 10, "unit_amount": "6.50", "flat_amount": "10"},
]


def test_graduated_last_tier_extends_beyond_its_bound() -> None:
    # 5 × 7.00 + (7 × 6.50 + 10) = 35 + 55.50 = 90.50: units 11 and 12 are in tier 2
    result = priced({"model": "graduated", "tiers": BOUNDED_TIERS}, 12)
    assert result.amount == D("90.50")
    assert [(t.tier, t.quantity, t.amount) for t in result.tiers] == [
        (1, D(5), D("35.00")),
        (2, D(7), D("55.50")),
    ]
    # within the bounds it prices as if the last bound were null: 5 × 7 + 5 × 6.50 + 10
    assert priced({"model": "graduated", "tiers": BOUNDED_TIERS}, 10).amount == D("77.50")


def test_volume_beyond_the_last_bound_uses_the_last_tier() -> None:
    # 12 units reach past tier 2's bound of 10: every unit at 6.50, plus 10 = 88.00
    result = priced({"model": "volume", "tiers": BOUNDED_TIERS}, 12)
    assert result.amount == D("88.00")
    assert [(t.tier, t.quantity) for t in result.tiers] == [(2, D(12))]


def test_graduated_percentage_beyond_the_last_bound_uses_the_last_rate() -> None:
    spec = {
        "model": "graduated_percentage",
        "tiers": [
            {"up_to": 1000, "rate_percent": "1", "flat_amount": "2"},
            {"up_to": 5000, "rate_percent": "0.5"},
        ],
    }
    # 1000 × 1 % + 2 + 5000 × 0.5 % = 10 + 2 + 25 = 37: the 1000 above 5000 still at 0.5 %
    assert priced(spec, 6000).amount == D(37)


def test_percentage_free_amount_zero_leaves_the_event_allowance() -> None:
    # As in Lago, free_amount "0" means no allowance by amount: the first 3 events are free
    # whatever their amounts; the fourth (100) pays 1.30 + 0.30 = 1.60. Read as an allowance
    # of 0 it would end at once and make all four paid (12.00 × 3 + 1.60 = 37.60).
    spec = {**LAGO_PERCENTAGE, "free_amount": "0"}
    result = priced_events(spec, "1000", "1000", "1000", "100")
    assert result.amount == D("1.60")
    assert result.details == {"events": "4", "paid_events": "1", "free_events_used": "3"}


def test_percentage_free_events_zero_leaves_the_amount_allowance() -> None:
    # free_events 0 likewise: 100 + 100 inside the 250; the third 100 crosses it and pays
    # 50 × 1.3 % + 0.30 = 0.95
    spec = {**LAGO_PERCENTAGE, "free_events": 0}
    assert priced_events(spec, "100", "100", "100").amount == D("0.95")


def test_percentage_zero_allowances_alone_mean_no_allowance() -> None:
    spec = {"model": "percentage", "rate_percent": "1.3", "fixed_amount": "0.30"}
    for allowance in (
        {"free_amount": "0"},
        {"free_events": 0},
        {"free_amount": 0, "free_events": 0},
    ):
        # 200 × 1.3 % + 0.30 = 2.90 per event, nothing free
        assert priced_events({**spec, **allowance}, "200", "200").amount == D("5.80")


def test_percentage_state_agrees_with_a_zero_free_amount() -> None:
    # The live path's mergeable state must keep the event allowance's head too.
    spec = charge(**{**LAGO_PERCENTAGE, "free_amount": "0"})
    assert isinstance(spec, PercentageCharge)
    left, right = PercentageState(), PercentageState()
    for index, (ts, event_id, amount) in enumerate(events("1000", "1000", "1000", "100")):
        (left if index % 2 else right).add(spec, ts, event_id, amount)
    assert left.merge(right, spec).charge(spec).amount == D("1.60")
