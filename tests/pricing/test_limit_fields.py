"""Plan limit fields: parsed, validated (refused whole, with the path), canonical; the pure
decision at its boundaries."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from pricing.limits import LimitOverrides, MetricLimits, decide, effective_limits
from pricing.plans import PlanError, load_plan, plan_content_hash, plan_to_dict

BASE: dict[str, Any] = {
    "code": "capped",
    "name": "Capped",
    "currency": "USD",
    "metrics": {"api_calls": {"aggregation": "sum"}, "storage_gb": {"aggregation": "max"}},
    "charges": [
        {
            "metric": "api_calls",
            "model": "graduated",
            "tiers": [
                {"up_to": 10000, "unit_amount": "0"},
                {"up_to": None, "unit_amount": "0.01"},
            ],
        },
        {"metric": "storage_gb", "model": "standard", "unit_amount": "0.10"},
    ],
}


def plan_with(**fields: Any) -> dict[str, Any]:
    plan = copy.deepcopy(BASE)
    plan.update(fields)
    return plan


def test_limit_fields_parse_and_keep_their_decimal_form() -> None:
    plan = load_plan(
        plan_with(
            limits={"api_calls": {"hard_limit": 1000000, "throttle_at": "0.95"}},
            spend_cap="5000.00",
        )
    )
    assert plan.limits["api_calls"] == MetricLimits(
        hard_limit=Decimal(1000000), throttle_at=Decimal("0.95")
    )
    assert plan.spend_cap == Decimal("5000.00")
    document = plan_to_dict(plan)
    assert document["limits"] == {"api_calls": {"hard_limit": "1000000", "throttle_at": "0.95"}}
    assert document["spend_cap"] == "5000"
    assert load_plan(document) == plan


def test_a_plan_without_limits_keeps_its_content_hash() -> None:
    """Existing stored plans must not turn into new versions because the model grew."""
    plan = load_plan(BASE)
    assert "limits" not in plan_to_dict(plan) and "spend_cap" not in plan_to_dict(plan)
    assert plan_content_hash(plan) == plan_content_hash(load_plan(plan_to_dict(plan)))


BAD = [
    ({"limits": {"nope": {"hard_limit": 5}}}, "limits.nope", "has no definition in metrics"),
    ({"limits": {"api_calls": {"hard_limit": -1}}}, "limits.api_calls.hard_limit", "negative"),
    ({"limits": {"api_calls": {"hard_limit": "lots"}}}, "limits.api_calls.hard_limit", ""),
    ({"limits": {"api_calls": {"throttle_at": "95%"}}}, "limits.api_calls.throttle_at", "0.95"),
    ({"limits": {"api_calls": {"throttle_at": 0}}}, "limits.api_calls.throttle_at", "than 0"),
    ({"limits": {"api_calls": {"max": 3}}}, "limits.api_calls.max", "unknown key"),
    (
        {"limits": {"storage_gb": {"throttle_at": "0.9"}}},
        "limits.storage_gb.throttle_at",
        "includes none",
    ),
    ({"spend_cap": "-5"}, "spend_cap", "negative"),
    ({"spend_cap": "NaN"}, "spend_cap", ""),
]


@pytest.mark.parametrize(("fields", "path", "reason"), BAD)
def test_bad_limit_values_refuse_the_whole_plan(
    fields: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(plan_with(**fields))
    assert any(p == path and reason in r for p, r in caught.value.errors), caught.value.errors


def test_overrides_beat_the_plan_field_by_field() -> None:
    plan_limits = {"api_calls": MetricLimits(hard_limit=Decimal(100), throttle_at=Decimal("0.9"))}
    own = LimitOverrides({"api_calls": MetricLimits(hard_limit=Decimal(500))}, Decimal("20"))
    limits = effective_limits("api_calls", Decimal(50), plan_limits, Decimal("10"), own)
    assert (limits.hard_limit, limits.throttle_at, limits.spend_cap) == (500, Decimal("0.9"), 20)
    assert limits.throttle_units == 45
    plain = effective_limits("api_calls", Decimal(50), plan_limits, Decimal("10"))
    assert (plain.hard_limit, plain.spend_cap) == (100, 10)


RESET = datetime(2026, 12, 1, tzinfo=UTC)


def _decide(used: int, quantity: int, **kw: Any) -> Any:
    limits = effective_limits("api_calls", Decimal(80), {"api_calls": MetricLimits(**kw)}, None)
    return decide(
        "cus",
        limits,
        used=Decimal(used),
        prospective=Decimal(used + quantity),
        resets_at=RESET,
        quantity=Decimal(quantity),
    )


def test_the_hard_limit_boundary_allows_exactly_the_limit() -> None:
    at_limit = _decide(99, 1, hard_limit=100)
    assert at_limit.allowed and at_limit.reason is None and at_limit.remaining == 1
    over = _decide(100, 1, hard_limit=100)
    assert not over.allowed and over.reason == "hard_limit" and over.remaining == 0
    assert not _decide(95, 6, hard_limit=100).allowed


def test_throttle_starts_where_usage_reaches_the_share_of_included() -> None:
    assert not _decide(70, 1, throttle_at=Decimal("0.9")).throttle  # 71 < 72
    assert _decide(71, 1, throttle_at=Decimal("0.9")).throttle  # 72 == 0.9 × 80
    assert _decide(71, 1, throttle_at=Decimal("0.9")).allowed  # throttling is advice


def test_retry_after_counts_to_the_period_end() -> None:
    decision = _decide(1, 1, hard_limit=0)
    assert decision.retry_after(datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)) == 30
    assert decision.retry_after(RESET) == 1
