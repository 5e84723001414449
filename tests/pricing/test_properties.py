"""Properties that must hold for every input, checked with hypothesis."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from pricing.aggregations import MetricState, aggregate
from pricing.charges import (
    GraduatedCharge,
    MetricUsage,
    PercentageCharge,
    PercentageState,
    Tier,
    price_charge,
)
from pricing.charges.percentage import price as price_percentage
from pricing.events import Event
from pricing.money import CURRENCIES, minor_unit, round_money
from pricing.periods import Period
from pricing.plans import MetricDefinition, load_plan, plan_content_hash, plan_to_dict

D = Decimal
PERIOD = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
PERIOD_MICROS = (PERIOD.end - PERIOD.start) // timedelta(microseconds=1)

# Hypothesis profiles (HYPOTHESIS_PROFILE=thorough for many more examples): tests/conftest.py.


def decimals(low: str, high: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(D(low), D(high), places=places, allow_nan=False, allow_infinity=False)


@st.composite
def tiers(draw: st.DrawFn) -> list[Tier]:
    bounds = sorted(draw(st.sets(decimals("0", "100000", 2), min_size=0, max_size=5)))
    # the last tier open (null) or bounded: units beyond a bounded last tier are priced in it
    ups: list[Decimal | None] = list(bounds) if bounds and draw(st.booleans()) else [*bounds, None]
    prices = draw(st.lists(decimals("0", "10", 4), min_size=len(ups), max_size=len(ups)))
    flats = draw(st.lists(decimals("0", "50", 2), min_size=len(ups), max_size=len(ups)))
    return [
        Tier(up_to=up, unit_amount=price, flat_amount=flat)
        for up, price, flat in zip(ups, prices, flats, strict=True)
    ]


@given(tiers(), decimals("0", "1000", 0), decimals("0", "300000", 3), decimals("0", "300000", 3))
def test_graduated_amount_never_decreases_as_quantity_grows(
    tier_list: list[Tier], included: Decimal, a: Decimal, b: Decimal
) -> None:
    charge = GraduatedCharge(metric="m", tiers=tier_list, included=included)
    low, high = sorted((a, b))
    assert (
        price_charge(charge, MetricUsage(low)).amount
        <= price_charge(charge, MetricUsage(high)).amount
    )


@given(tiers(), decimals("0", "1000", 0), decimals("0", "300000", 3))
def test_tier_quantities_add_up_to_the_billable_quantity(
    tier_list: list[Tier], included: Decimal, quantity: Decimal
) -> None:
    charge = GraduatedCharge(metric="m", tiers=tier_list, included=included)
    result = price_charge(charge, MetricUsage(quantity))
    assert result.billable == max(quantity - included, D(0))
    assert sum((line.quantity for line in result.tiers), start=D(0)) == result.billable
    assert sum((line.amount for line in result.tiers), start=D(0)) == result.amount
    assert [line.tier for line in result.tiers] == list(range(1, len(result.tiers) + 1))


@given(decimals("-1000000", "1000000", 8), st.sampled_from(sorted(CURRENCIES)))
def test_rounding_never_moves_an_amount_by_more_than_half_a_minor_unit(
    amount: Decimal, currency: str
) -> None:
    rounded = round_money(amount, currency)
    half_unit = D(1).scaleb(-minor_unit(currency)) / 2
    assert abs(rounded - amount) <= half_unit
    assert rounded.as_tuple().exponent == -minor_unit(currency)
    assert round_money(rounded, currency) == rounded


# ---- plans survive a YAML round trip ---------------------------------------------------

money = decimals("0", "1000", 4).map(str)


@st.composite
def tier_dicts(draw: st.DrawFn, percentage: bool) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.sets(st.integers(0, 10**6), max_size=4)))
    ups: list[int | None] = list(bounds) if bounds and draw(st.booleans()) else [*bounds, None]
    result: list[dict[str, Any]] = []
    for up in ups:
        tier: dict[str, Any] = {"up_to": up}
        if percentage:
            tier["rate_percent"] = str(draw(decimals("0", "100", 3)))
        elif draw(st.booleans()):
            tier["unit_amount"] = draw(money)
        if draw(st.booleans()):
            tier["flat_amount"] = draw(money)
        result.append(tier)
    return result


@st.composite
def charge_dicts(draw: st.DrawFn, metric: str) -> dict[str, Any]:
    model = draw(
        st.sampled_from(
            ["standard", "graduated", "volume", "package", "percentage", "graduated_percentage"]
        )
    )
    charge: dict[str, Any] = {"metric": metric, "model": model}
    if model not in ("percentage", "graduated_percentage") and draw(st.booleans()):
        charge["included"] = draw(st.integers(0, 10000))
    if draw(st.booleans()):
        charge["name"] = draw(st.text(min_size=1, max_size=20))
    if model == "standard":
        charge["unit_amount"] = draw(money)
    elif model in ("graduated", "volume"):
        charge["tiers"] = draw(tier_dicts(percentage=False))
    elif model == "graduated_percentage":
        charge["tiers"] = draw(tier_dicts(percentage=True))
    elif model == "package":
        charge["package_size"] = draw(st.integers(1, 5000))
        charge["package_amount"] = draw(money)
    else:
        charge["rate_percent"] = str(draw(decimals("0", "100", 2)))
        for key in ("fixed_amount", "free_amount"):
            if draw(st.booleans()):
                charge[key] = draw(money)
        if draw(st.booleans()):
            charge["free_events"] = draw(st.integers(0, 10))
        bounds = sorted(draw(st.lists(decimals("0", "100", 2), min_size=2, max_size=2)))
        if draw(st.booleans()):
            charge["per_event_min"] = str(bounds[0])
        if draw(st.booleans()):
            charge["per_event_max"] = str(bounds[1])
    return charge


@st.composite
def plan_dicts(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True), min_size=1, max_size=4, unique=True
        )
    )
    metrics: dict[str, Any] = {}
    for name in names:
        aggregation = draw(
            st.sampled_from(["sum", "count", "max", "unique_count", "latest", "weighted_sum"])
        )
        metric: dict[str, Any] = {"aggregation": aggregation}
        if aggregation == "unique_count" or (aggregation != "count" and draw(st.booleans())):
            metric["field"] = draw(st.sampled_from(["user_id", "amount", "bytes"]))
        if draw(st.booleans()):
            metric["event"] = draw(st.sampled_from(["api_calls", "payments"]))
        if draw(st.booleans()):
            metric["filter"] = {
                "region": draw(
                    st.lists(
                        st.one_of(
                            st.sampled_from(["eu", "us"]),
                            st.integers(0, 9),
                            st.booleans(),
                            decimals("0", "10", 2),
                        ),
                        min_size=1,
                        max_size=3,
                    )
                )
            }
        metrics[name] = metric
    plan: dict[str, Any] = {
        "code": draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)),
        "name": draw(st.text(min_size=1, max_size=30)),
        "currency": draw(st.sampled_from(sorted(CURRENCIES))).lower(),
        "interval": draw(st.sampled_from(["month", "year"])),
        "base_fee": draw(money),
        "tax_rate": str(draw(decimals("0", "1", 4))),
        "metrics": metrics,
        "charges": [draw(charge_dicts(name)) for name in names],
    }
    if draw(st.booleans()):
        plan["minimum_spend"] = draw(money)
    if draw(st.booleans()):
        plan["description"] = draw(st.text(max_size=50))
    return plan


@given(plan_dicts())
def test_a_plan_survives_a_yaml_round_trip(data: dict[str, Any]) -> None:
    plan = load_plan(data)
    text = yaml.safe_dump(plan_to_dict(plan))
    again = load_plan(text)
    assert again == plan
    assert plan_to_dict(again) == plan_to_dict(plan)
    assert plan_content_hash(again) == plan_content_hash(plan)
    assert load_plan(json.dumps(plan_to_dict(plan))) == plan


# ---- MetricState: any split, any merge order, equals aggregate() -------------------------

METRICS = [
    MetricDefinition(aggregation="sum"),
    MetricDefinition(aggregation="sum", field="amount"),
    MetricDefinition(aggregation="count", filter={"region": ["eu"]}),
    MetricDefinition(aggregation="max"),
    MetricDefinition(aggregation="max", field="amount", filter={"region": ["eu", "us"]}),
    MetricDefinition(aggregation="unique_count", field="user"),
    MetricDefinition(aggregation="latest"),
    MetricDefinition(aggregation="latest", field="amount"),
    MetricDefinition(aggregation="weighted_sum"),
    MetricDefinition(aggregation="weighted_sum", filter={"region": ["us"]}),
]

# A few fixed instants make timestamp ties (and the latest tie-break) likely.
offsets = st.one_of(
    st.sampled_from([0, 1, PERIOD_MICROS // 2, PERIOD_MICROS - 1]),
    st.integers(-(10**9), PERIOD_MICROS + 10**9),
)


@st.composite
def usage_events(draw: st.DrawFn) -> list[Event]:
    count = draw(st.integers(0, 25))
    events = []
    for index in range(count):
        properties: dict[str, Any] = {}
        if draw(st.booleans()):
            properties["region"] = draw(st.sampled_from(["eu", "us", "apac"]))
        if draw(st.booleans()):
            properties["user"] = draw(st.sampled_from(["u1", "u2", "u3", 4, 4.0]))
        if draw(st.booleans()):
            properties["amount"] = str(draw(decimals("-1000", "1000000", 6)))
        events.append(
            Event(
                event_id=draw(st.sampled_from([f"e{index}", f"x{index}"])),
                customer_id="c",
                metric=draw(st.sampled_from(["api_calls", "api_calls", "other"])),
                quantity=draw(decimals("-1000", "999999999999", 6)),
                timestamp=PERIOD.start + timedelta(microseconds=draw(offsets)),
                properties=properties,
            )
        )
    return events


def split(items: list[Any], labels: list[int], parts: int) -> list[list[Any]]:
    """Partition `items` into `parts` groups: item i goes to group labels[i]."""
    groups: list[list[Any]] = [[] for _ in range(parts)]
    for item, label in zip(items, labels, strict=True):
        groups[label].append(item)
    return groups


@given(st.sampled_from(METRICS), usage_events(), st.data())
def test_metric_states_merged_in_any_order_equal_aggregate(
    metric: MetricDefinition, events: list[Event], data: st.DataObject
) -> None:
    expected = aggregate("api_calls", metric, events, PERIOD)
    shuffled = data.draw(st.permutations(events))
    parts = data.draw(st.integers(1, 4))
    labels = data.draw(
        st.lists(st.integers(0, parts - 1), min_size=len(events), max_size=len(events))
    )
    groups = split(shuffled, labels, parts)
    states = [MetricState.of("api_calls", metric, group, PERIOD) for group in groups]
    # a trip through JSON on the way, as the live path stores states
    states = [MetricState.from_dict(json.loads(json.dumps(s.to_dict()))) for s in states]
    order = data.draw(st.permutations(states))
    merged = reduce(lambda a, b: a.merge(b), order, MetricState.empty())
    assert merged.value(metric, PERIOD) == expected
    # a different grouping of the same parts gives the same state
    if len(states) >= 3:
        left = states[0].merge(states[1]).merge(states[2])
        right = states[0].merge(states[1].merge(states[2]))
        assert left == right


# ---- PercentageState equals pricing the full event list --------------------------------


@st.composite
def percentage_charges(draw: st.DrawFn) -> PercentageCharge:
    low, high = sorted(draw(st.lists(decimals("0", "20", 2), min_size=2, max_size=2)))
    return PercentageCharge(
        metric="payments",
        rate_percent=draw(decimals("0", "100", 3)),
        fixed_amount=draw(decimals("0", "1", 2)),
        free_events=draw(st.none() | st.integers(0, 6)),
        free_amount=draw(st.none() | decimals("0", "500", 2)),
        per_event_min=draw(st.none() | st.just(low)),
        per_event_max=draw(st.none() | st.just(high)),
    )


payment_events = st.lists(
    st.tuples(st.integers(0, 20), decimals("-50", "400", 2)), max_size=30
).map(
    lambda items: [
        (PERIOD.start + timedelta(minutes=minute), f"p{index:03d}", amount)
        for index, (minute, amount) in enumerate(items)
    ]
)


@given(percentage_charges(), payment_events, st.data())
def test_percentage_state_equals_event_list_pricing(
    charge: PercentageCharge, events: list[tuple[datetime, str, Decimal]], data: st.DataObject
) -> None:
    total = sum((amount for _t, _i, amount in events), start=D(0))
    ordered = tuple(sorted(events, key=lambda e: (e[0], e[1])))
    expected = price_percentage(charge, MetricUsage(total, ordered))

    shuffled = data.draw(st.permutations(events))
    parts = data.draw(st.integers(1, 4))
    labels = data.draw(
        st.lists(st.integers(0, parts - 1), min_size=len(events), max_size=len(events))
    )
    states = []
    for group in split(shuffled, labels, parts):
        state = PercentageState.empty()
        for event in group:
            state.add(charge, *event)
        states.append(state)
    states = [PercentageState.from_dict(json.loads(json.dumps(s.to_dict()))) for s in states]
    order = data.draw(st.permutations(states))
    merged = reduce(lambda a, b: a.merge(b, charge), order, PercentageState.empty())

    result = merged.charge(charge)
    assert result.amount == expected.amount
    assert result.billable == expected.billable
    assert result.quantity == expected.quantity
    assert result.details == expected.details
    # the head only keeps what the allowance can still touch
    assert len(merged.head) <= len(events)
    if charge.event_allowance is not None:  # free_events 0 counts as absent
        assert len(merged.head) <= charge.event_allowance
