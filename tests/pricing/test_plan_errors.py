"""A bad plan is refused whole, and the message points at the field to fix."""

import copy
from typing import Any

import pytest

from pricing.plans import PlanError, load_plan

VALID: dict[str, Any] = {
    "code": "growth",
    "name": "Growth",
    "currency": "USD",
    "metrics": {
        "api_calls": {"aggregation": "sum"},
        "payments": {"aggregation": "sum", "field": "amount"},
    },
    "charges": [
        {
            "metric": "api_calls",
            "model": "graduated",
            "tiers": [
                {"up_to": 10000, "unit_amount": "0"},
                {"up_to": 100000, "unit_amount": "0.01"},
                {"up_to": None, "unit_amount": "0.005"},
            ],
        },
        {"metric": "payments", "model": "percentage", "rate_percent": "1.3"},
    ],
}


def broken(change: Any) -> dict[str, Any]:
    plan = copy.deepcopy(VALID)
    change(plan)
    return plan


def refused(plan: Any) -> PlanError:
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    return caught.value


def test_the_valid_plan_loads() -> None:
    assert load_plan(VALID).code == "growth"


CASES = [
    (
        lambda p: p["charges"][0].update(model="tiered"),
        "charges[0].model",
        "unknown charge model 'tiered'; known models: graduated, graduated_percentage, "
        "package, percentage, standard, volume",
    ),
    (
        lambda p: p["charges"][0].pop("model"),
        "charges[0].model",
        "required; known models: graduated",
    ),
    (
        lambda p: p["charges"][0]["tiers"][1].update(up_to=5000),
        "charges[0].tiers[1].up_to",
        "tiers must be in strictly increasing order",
    ),
    (
        lambda p: p["charges"][0]["tiers"][1].update(up_to=10000),
        "charges[0].tiers[1].up_to",
        "tiers must be in strictly increasing order",
    ),
    (
        lambda p: p["charges"][0]["tiers"][0].update(up_to=None),
        "charges[0].tiers[0].up_to",
        "only the last tier may have up_to: null",
    ),
    (
        lambda p: p["charges"][0].update(tiers=[]),
        "charges[0].tiers",
        "must have at least one tier",
    ),
    (
        lambda p: p["charges"][0].update(metric="storage_gb"),
        "charges[0].metric",
        "metric 'storage_gb' has no definition in metrics",
    ),
    (
        lambda p: p["charges"][0]["tiers"][1].update(unit_amount="-0.01"),
        "charges[0].tiers[1].unit_amount",
        "must not be negative",
    ),
    (
        lambda p: p["charges"][0]["tiers"][1].update(flat_amount=-1),
        "charges[0].tiers[1].flat_amount",
        "must not be negative",
    ),
    (lambda p: p.update(base_fee="-5"), "base_fee", "must not be negative"),
    (lambda p: p.update(minimum_spend="abc"), "minimum_spend", "not a number: 'abc'"),
    (lambda p: p.update(base_fee="NaN"), "base_fee", "must be a finite number"),
    (lambda p: p.update(base_fee=True), "base_fee", "must be a number, not a boolean"),
    (lambda p: p.update(currency="XYZ"), "currency", "not an ISO 4217 currency code: 'XYZ'"),
    (lambda p: p.update(currency="dollars"), "currency", "not an ISO 4217 currency code"),
    (lambda p: p.update(tax_rate="1.5"), "tax_rate", "must be between 0 and 1"),
    (lambda p: p.update(code="Growth Plan"), "code", "must be lowercase letters"),
    (lambda p: p.update(interval="week"), "interval", "Input should be 'month' or 'year'"),
    (
        lambda p: p["charges"].append(
            {"metric": "api_calls", "model": "package", "package_size": 0, "package_amount": 5}
        ),
        "charges[2].package_size",
        "must be greater than 0",
    ),
    (
        lambda p: p["charges"].append(
            {"metric": "api_calls", "model": "package", "package_size": -10, "package_amount": 5}
        ),
        "charges[2].package_size",
        "must be greater than 0",
    ),
    (lambda p: p.update(colour="blue"), "colour", "unknown key"),
    (
        lambda p: p["charges"][0].update(tier_mode="graduated"),
        "charges[0].tier_mode",
        "unknown key",
    ),
    (
        lambda p: p["charges"][0]["tiers"][0].update(price=1),
        "charges[0].tiers[0].price",
        "unknown key",
    ),
    (lambda p: p["metrics"]["api_calls"].update(agg="sum"), "metrics.api_calls.agg", "unknown key"),
    (
        lambda p: p["charges"][1].update(rate_percent="100.5"),
        "charges[1].rate_percent",
        "must be between 0 and 100",
    ),
    (
        lambda p: p["charges"][1].update(rate_percent="-1"),
        "charges[1].rate_percent",
        "must be between 0 and 100",
    ),
    (
        lambda p: p["charges"][1].update(per_event_min="5", per_event_max="1"),
        "charges[1].per_event_min",
        "must not be greater than per_event_max",
    ),
    (
        lambda p: p["charges"][1].update(included=10),
        "charges[1].included",
        "not allowed on percentage charges",
    ),
    (
        lambda p: p["charges"][1].update(free_events="2.5"),
        "charges[1].free_events",
        "must be a whole number",
    ),
    (
        lambda p: p["charges"][1].update(fixed_amount="-0.30"),
        "charges[1].fixed_amount",
        "must not be negative",
    ),
    (
        lambda p: p["charges"][1].update(free_events=-1),
        "charges[1].free_events",
        "must not be negative",
    ),
    (
        lambda p: p["metrics"].update(seats={"aggregation": "unique_count"}),
        "metrics.seats.field",
        "required for unique_count",
    ),
    (
        lambda p: p["metrics"].update(n={"aggregation": "count", "field": "x"}),
        "metrics.n.field",
        "count counts events and reads no field",
    ),
    (
        lambda p: p["metrics"].update(n={"aggregation": "average"}),
        "metrics.n.aggregation",
        "Input should be 'sum', 'count', 'max', 'unique_count', 'latest' or 'weighted_sum'",
    ),
    (
        lambda p: p["metrics"].update(eu={"aggregation": "sum", "filter": {"region": []}}),
        "metrics.eu.filter.region",
        "must list at least one value",
    ),
    (
        lambda p: p["charges"].append(copy.deepcopy(p["charges"][0])),
        "charges[2]",
        "duplicates charges[0]",
    ),
    (
        lambda p: p["charges"].append({**copy.deepcopy(p["charges"][1]), "name": "again"}),
        "charges[2]",
        "duplicates charges[1]",
    ),
    (lambda p: p.pop("currency"), "currency", "required"),
    (
        lambda p: p["metrics"].update({"m" * 129: {"aggregation": "sum"}}),
        "metrics." + "m" * 129,
        "a metric name has 1 to 128 characters",
    ),
    (lambda p: p["charges"][0]["tiers"][0].pop("up_to"), "charges[0].tiers[0].up_to", "required"),
    (
        lambda p: p["charges"][1].pop("rate_percent"),
        "charges[1].rate_percent",
        "required",
    ),
]


@pytest.mark.parametrize(("change", "path", "reason"), CASES)
def test_each_error_names_its_path_and_reason(change: Any, path: str, reason: str) -> None:
    error = refused(broken(change))
    assert any(p == path and reason in r for p, r in error.errors), error.errors
    assert f"{path}: {reason}" in str(error)


def test_every_error_is_reported_at_once() -> None:
    def several(plan: dict[str, Any]) -> None:
        plan["currency"] = "XYZ"
        plan["charges"][0]["tiers"][1]["up_to"] = 1
        plan["charges"][1]["rate_percent"] = 101

    error = refused(broken(several))
    assert [path for path, _ in error.errors] == [
        "currency",
        "charges[0].tiers[1].up_to",
        "charges[1].rate_percent",
    ]
    assert str(error).count("\n") == 2


def test_discriminator_names_never_appear_in_paths() -> None:
    error = refused(broken(lambda p: p["charges"][0]["tiers"][2].update(unit_amount="x")))
    assert error.errors[0][0] == "charges[0].tiers[2].unit_amount"
    assert "graduated" not in error.errors[0][0]


def test_text_that_is_not_a_plan() -> None:
    assert "not valid YAML or JSON" in str(refused("code: [unclosed"))
    assert "a plan must be a mapping" in str(refused("- just\n- a list\n"))
    assert "a plan must be a mapping" in str(refused(""))


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)
