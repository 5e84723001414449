"""Which customers near-limit lists: a share of the included usage, or of a hard limit (the
plan's `limits`, once plans carry them), whichever is higher. No servers."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from pricing.plans import load_plan
from services.analytics import _near, hard_limit
from tests.billing.helpers import SMALL


def _limited(limit: str) -> Any:
    """SMALL with a hard limit on api_calls, as a plan with `limits` reads."""
    plan = load_plan(SMALL)
    return SimpleNamespace(
        code=plan.code,
        charges=plan.charges,
        limits={"api_calls": SimpleNamespace(hard_limit=Decimal(limit))},
    )


def test_a_share_of_the_included_usage() -> None:
    plan = load_plan(SMALL)  # api_calls: 100 free
    row = _near("a", plan, "api_calls", Decimal(85), Decimal(80))
    assert row is not None and row.share_of_included == Decimal("85.0")
    assert row.hard_limit is None and row.share_of_limit is None
    assert _near("a", plan, "api_calls", Decimal(79), Decimal(80)) is None
    assert _near("a", plan, "seats", Decimal(1000), Decimal(80)) is None  # nothing included


def test_a_share_of_a_hard_limit() -> None:
    plan = _limited("1000")
    assert hard_limit(plan, "api_calls") == Decimal(1000)
    assert hard_limit(load_plan(SMALL), "api_calls") is None
    row = _near("a", plan, "api_calls", Decimal(900), Decimal(80))
    assert row is not None and row.share_of_limit == Decimal("90.0")
    assert row.to_json()["limit_percent"] == "90.0"
    # 60 of 100 included is below 80 %, but 60 of a hard limit of 70 is not.
    row = _near("a", _limited("70"), "api_calls", Decimal(60), Decimal(80))
    assert row is not None and row.share_of_included == Decimal("60.0")
