"""Plan storage: content-addressed versions, immutable once stored."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pricing.plans import Plan, load_plan, plan_content_hash
from storage.catalog.plans import apply_plan, get_plan, list_plans
from storage.errors import NotFound

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"


def _plan(unit_amount: str = "0.01", **overrides: Any) -> Plan:
    definition: dict[str, Any] = {
        "code": "api",
        "name": "API",
        "currency": "USD",
        "metrics": {"api_calls": {"aggregation": "sum"}},
        "charges": [{"metric": "api_calls", "model": "standard", "unit_amount": unit_amount}],
    }
    definition.update(overrides)
    return load_plan(definition)


def test_a_new_plan_is_version_1(db: psycopg.Connection) -> None:
    plan = _plan()
    assert apply_plan(plan) == (1, True)
    stored, version = get_plan("api")
    assert (stored, version) == (plan, 1)
    row = db.execute("SELECT content_hash FROM plans WHERE code = 'api'").fetchone()
    assert row == (plan_content_hash(plan),)


def test_the_same_content_again_is_a_no_op(db: psycopg.Connection) -> None:
    assert apply_plan(_plan()) == (1, True)
    # "0.010" is the same price as "0.01": same content, same version.
    assert apply_plan(_plan(unit_amount="0.010")) == (1, False)
    assert db.execute("SELECT count(*) FROM plans").fetchone() == (1,)


def test_changed_content_is_a_new_version_and_old_ones_stay_readable(
    db: psycopg.Connection,
) -> None:
    v1, v2 = _plan(), _plan(unit_amount="0.02")
    assert apply_plan(v1) == (1, True)
    assert apply_plan(v2) == (2, True)
    assert apply_plan(v2) == (2, False)
    assert get_plan("api") == (v2, 2)
    assert get_plan("api", 1) == (v1, 1)
    assert get_plan("api", 2) == (v2, 2)
    # Going back to the first content is a change too: a third version, equal to the first.
    assert apply_plan(v1) == (3, True)
    assert get_plan("api", 3) == (v1, 3)


def test_stored_versions_are_immutable(db: psycopg.Connection) -> None:
    apply_plan(_plan())
    with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"):
        db.execute("UPDATE plans SET definition = '{}' WHERE code = 'api'")
    with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"):
        db.execute("DELETE FROM plans WHERE code = 'api'")
    assert get_plan("api") == (_plan(), 1)


def test_missing_plans_and_versions_are_not_found(clean_state: None) -> None:
    with pytest.raises(NotFound, match="plan_code: no plan 'nope'"):
        get_plan("nope")
    apply_plan(_plan())
    with pytest.raises(NotFound, match="version 7"):
        get_plan("api", 7)
    with pytest.raises(KeyError):  # NotFound is a KeyError for callers that expect one
        get_plan("nope")


def test_list_plans_shows_the_latest_version_of_each(clean_state: None) -> None:
    apply_plan(_plan())
    apply_plan(_plan(unit_amount="0.02", name="API v2", currency="EUR"))
    apply_plan(_plan(code="basic", name="Basic"))
    rows = list_plans()
    assert [(r.code, r.name, r.currency, r.version, r.versions) for r in rows] == [
        ("api", "API v2", "EUR", 2, 2),
        ("basic", "Basic", "USD", 1, 1),
    ]
    assert all(r.created_at.tzinfo is not None for r in rows)


def test_example_plan_files_round_trip_through_storage(clean_state: None) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        plan = load_plan(path.read_text())
        version, created = apply_plan(plan)
        assert (version, created) == (1, True)
        assert get_plan(plan.code) == (plan, 1)


def test_concurrent_applies_of_one_change_store_one_version(clean_state: None) -> None:
    plan = _plan(unit_amount="0.03")
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(4)

    def apply() -> None:
        barrier.wait()
        results.append(apply_plan(plan))

    threads = [threading.Thread(target=apply) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [(1, False), (1, False), (1, False), (1, True)]


def test_money_in_a_stored_plan_stays_decimal(clean_state: None) -> None:
    apply_plan(_plan(unit_amount="0.0001"))
    stored, _ = get_plan("api")
    assert stored.charges[0].unit_amount == Decimal("0.0001")  # type: ignore[union-attr]


def test_a_stored_plan_keeps_the_order_of_its_file(db: object) -> None:
    from pricing.plans import load_plan
    from storage.catalog.plans import apply_plan, get_plan

    text = (
        "code: ordered\nname: Ordered\ncurrency: USD\n"
        "metrics:\n  zeta: {aggregation: sum}\n  alpha: {aggregation: count}\n"
        "  mid: {aggregation: max}\n"
        "charges:\n  - {metric: zeta, model: standard, unit_amount: '1'}\n"
        "  - {metric: alpha, model: standard, unit_amount: '1'}\n"
    )
    apply_plan(load_plan(text))
    plan, _ = get_plan("ordered")
    assert list(plan.metrics) == ["zeta", "alpha", "mid"]
