"""Plan files: loading, canonical form, content hash and included usage."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from pricing.charges import GraduatedCharge, PackageCharge, PercentageCharge, StandardCharge
from pricing.plans import Plan, included_usage, load_plan, plan_content_hash, plan_to_dict

D = Decimal
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"

GROWTH = """
code: growth
name: Growth
currency: usd
base_fee: "49.00"
minimum_spend: 100
tax_rate: 0.10
metrics:
  api_calls: {aggregation: sum}
  requests: {aggregation: count}
  seats: {aggregation: unique_count, field: user_id}
  eu_calls: {aggregation: sum, event: api_calls, filter: {region: [eu, uk]}}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 10000,  unit_amount: "0"}
      - {up_to: 100000, unit_amount: "0.01"}
      - {up_to: null,   unit_amount: 0.005}
  - {metric: requests, model: package, package_size: 1000, package_amount: "5.00", included: 1000}
  - {metric: eu_calls, model: standard, unit_amount: "0.001", included: 50, name: EU calls}
"""


def test_load_plan_reads_every_field() -> None:
    plan = load_plan(GROWTH)
    assert plan.code == "growth"
    assert plan.currency == "USD"  # upper-cased
    assert plan.interval == "month"
    assert (plan.base_fee, plan.minimum_spend, plan.tax_rate) == (D("49.00"), D(100), D("0.1"))
    assert plan.metrics["eu_calls"].event == "api_calls"
    assert plan.metrics["eu_calls"].filter == {"region": ["eu", "uk"]}
    assert plan.metrics["seats"].field == "user_id"
    graduated, package, standard = plan.charges
    assert isinstance(graduated, GraduatedCharge)
    assert isinstance(package, PackageCharge)
    assert isinstance(standard, StandardCharge)
    assert standard.name == "EU calls"
    assert graduated.tiers[1].unit_amount == D("0.01")
    assert graduated.tiers[2].up_to is None


def test_yaml_floats_never_become_binary_floats() -> None:
    plan = load_plan(GROWTH)
    # 0.005 and 0.10 are YAML floats; they must be read as their text, not their binary value
    graduated = plan.charges[0]
    assert isinstance(graduated, GraduatedCharge)
    assert str(graduated.tiers[2].unit_amount) == "0.005"
    assert str(plan.tax_rate) == "0.1"
    assert isinstance(plan.tax_rate, Decimal)


def test_load_plan_accepts_json_text_and_mappings() -> None:
    plan = load_plan(GROWTH)
    as_json = json.dumps(plan_to_dict(plan))
    assert load_plan(as_json) == plan
    assert load_plan(yaml.safe_load(GROWTH)) == plan


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_plans_load_and_round_trip(path: Path) -> None:
    plan = load_plan(path.read_text())
    again = load_plan(yaml.safe_dump(plan_to_dict(plan)))
    assert again == plan
    assert plan_content_hash(again) == plan_content_hash(plan)


def test_payments_example_is_the_lago_style_percentage_charge() -> None:
    plan = load_plan((EXAMPLES / "payments.yaml").read_text())
    charge = plan.charges[0]
    assert isinstance(charge, PercentageCharge)
    assert (charge.free_events, charge.free_amount) == (3, D(250))
    assert (charge.per_event_min, charge.per_event_max) == (D("0.50"), D("12.00"))


def test_plan_to_dict_is_canonical() -> None:
    data = plan_to_dict(load_plan(GROWTH))
    assert data["base_fee"] == "49"  # decimals as canonical strings
    assert data["tax_rate"] == "0.1"
    assert "interval" not in data  # defaults omitted
    tiers = data["charges"][0]["tiers"]
    assert tiers[0] == {"up_to": "10000"}  # unit_amount 0 is the default
    assert tiers[2] == {"up_to": None, "unit_amount": "0.005"}
    assert data["charges"][1]["model"] == "package"
    json.dumps(data)  # plain data only


def test_content_hash_changes_with_meaning_only() -> None:
    plan = load_plan(GROWTH)
    same = load_plan(GROWTH.replace('base_fee: "49.00"', "base_fee: 49"))
    cheaper = load_plan(GROWTH.replace('unit_amount: "0.01"', 'unit_amount: "0.009"'))
    assert len(plan_content_hash(plan)) == 64
    assert plan_content_hash(same) == plan_content_hash(plan)
    assert plan_content_hash(cheaper) != plan_content_hash(plan)


def test_included_usage() -> None:
    plan = load_plan(GROWTH)
    assert included_usage(plan, "api_calls") == D(10000)  # tier 1 priced at zero
    assert included_usage(plan, "requests") == D(1000)
    assert included_usage(plan, "eu_calls") == D(50)
    assert included_usage(plan, "seats") == D(0)  # no charge
    assert included_usage(plan, "unknown") == D(0)


def test_included_usage_adds_included_and_leading_free_tiers() -> None:
    plan = load_plan(
        {
            "code": "p",
            "name": "P",
            "currency": "EUR",
            "metrics": {"calls": {"aggregation": "sum"}},
            "charges": [
                {
                    "metric": "calls",
                    "model": "graduated",
                    "included": 100,
                    "tiers": [
                        {"up_to": 10, "unit_amount": 0},
                        {"up_to": 20, "unit_amount": 0},
                        {"up_to": 30, "unit_amount": 0, "flat_amount": 1},  # not free
                        {"up_to": None, "unit_amount": 0},
                    ],
                },
                {"metric": "calls", "model": "standard", "unit_amount": 0, "included": 5},
                {
                    "metric": "calls",
                    "model": "graduated",
                    "tiers": [
                        {"up_to": 10, "unit_amount": 1},
                        {"up_to": None, "unit_amount": 0},
                    ],
                },
            ],
        }
    )
    assert included_usage(plan, "calls") == D(100 + 20 + 5)


def test_several_charges_on_one_metric_are_allowed() -> None:
    plan = load_plan((EXAMPLES / "growth.yaml").read_text())
    base = plan_to_dict(plan)
    base["charges"].append({"metric": "api_calls", "model": "standard", "unit_amount": "0.0001"})
    assert len(load_plan(base).charges) == len(plan.charges) + 1


def test_plans_are_immutable() -> None:
    plan = load_plan(GROWTH)
    with pytest.raises(ValueError, match="frozen"):
        plan.code = "other"  # type: ignore[misc]


def test_pydantic_json_dump_loads_back() -> None:
    # storage may keep `model_dump(mode="json")`; it must load back to the same plan
    plan = load_plan(GROWTH)
    assert load_plan(json.loads(plan.model_dump_json())) == plan


def test_a_numeric_last_up_to_is_accepted_and_its_free_tier_is_not_included() -> None:
    def plan_with(tiers: list[dict[str, object]]) -> Plan:
        return load_plan(
            {
                "code": "p",
                "name": "P",
                "currency": "USD",
                "metrics": {"calls": {"aggregation": "sum"}},
                "charges": [{"metric": "calls", "model": "graduated", "tiers": tiers}],
            }
        )

    # a leading free tier before a bounded last tier is included usage
    assert (
        included_usage(plan_with([{"up_to": 100}, {"up_to": 1000, "unit_amount": 1}]), "calls")
        == 100
    )
    # a free last tier is unbounded whatever its up_to: counting it would claim 100 included
    # units when every unit is free
    assert included_usage(plan_with([{"up_to": 100, "unit_amount": 0}]), "calls") == 0
