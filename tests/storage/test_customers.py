"""Customers: validation that names the field, and the subscription history of plan changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pricing.plans import load_plan
from services.customers import (
    Subscription,
    change_plan,
    create_customer,
    get_customer,
    get_customers,
    list_customers,
    subscription_at,
    subscriptions,
)
from storage.catalog.plans import apply_plan
from storage.errors import Conflict, InvalidInput, NotFound

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


def _store_plan(code: str) -> None:
    apply_plan(
        load_plan(
            {
                "code": code,
                "name": code.title(),
                "currency": "USD",
                "metrics": {"api_calls": {"aggregation": "sum"}},
                "charges": [{"metric": "api_calls", "model": "standard", "unit_amount": "0.01"}],
            }
        )
    )


@pytest.fixture
def plans(clean_state: None) -> None:
    for code in ("basic", "pro", "enterprise"):
        _store_plan(code)


def test_create_customer_stores_it_and_opens_a_subscription(plans: None) -> None:
    customer = create_customer(
        "cus_1",
        "basic",
        timezone="Europe/Paris",
        anchor_day=15,
        starts_at=JAN,
        name="Acme",
        metadata={"tier": "gold"},
    )
    assert (customer.id, customer.plan_code) == ("cus_1", "basic")
    assert customer.timezone == "Europe/Paris"
    assert (customer.anchor_day, customer.starts_at, customer.name) == (15, JAN, "Acme")
    assert customer.metadata == {"tier": "gold"} and customer.ends_at is None
    assert get_customer("cus_1") == customer
    [subscription] = subscriptions("cus_1")
    assert (subscription.plan_code, subscription.starts_at, subscription.ends_at) == (
        "basic",
        JAN,
        None,
    )


def test_defaults_are_utc_calendar_periods_starting_now(plans: None) -> None:
    before = datetime.now(UTC)
    customer = create_customer("cus_2", "pro")
    assert customer.timezone == "UTC" and customer.anchor_day is None
    assert before - timedelta(seconds=5) <= customer.starts_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"plan_code": "gold"}, "plan_code"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"anchor_day": 0}, "anchor_day"),
        ({"anchor_day": 32}, "anchor_day"),
        ({"anchor_day": True}, "anchor_day"),
        ({"starts_at": datetime(2026, 1, 1)}, "starts_at"),  # naive: which timezone?
        ({"id": ""}, "id"),
        ({"id": "cus {1}"}, "id"),
        ({"id": "x" * 129}, "id"),
    ],
)
def test_invalid_input_names_the_field(
    plans: None, db: psycopg.Connection, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"id": "cus_1", "plan_code": "basic", **kwargs}
    with pytest.raises(InvalidInput, match=rf"^{field}: "):
        create_customer(arguments.pop("id"), arguments.pop("plan_code"), **arguments)
    assert db.execute("SELECT count(*) FROM customers").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM subscriptions").fetchone() == (0,)


def test_invalid_input_is_a_value_error(plans: None) -> None:
    with pytest.raises(ValueError):
        create_customer("cus_1", "basic", anchor_day=0)


def test_a_duplicate_id_is_a_conflict_and_changes_nothing(plans: None) -> None:
    original = create_customer("cus_1", "basic", starts_at=JAN)
    with pytest.raises(Conflict, match=r"^id: customer 'cus_1' already exists"):
        create_customer("cus_1", "pro", starts_at=FEB)
    assert get_customer("cus_1") == original
    assert len(subscriptions("cus_1")) == 1


def test_unknown_customers_are_not_found(plans: None) -> None:
    with pytest.raises(NotFound, match="id: no customer 'ghost'"):
        get_customer("ghost")
    with pytest.raises(NotFound):
        change_plan("ghost", "pro", FEB, now=MAR)
    with pytest.raises(NotFound):
        subscriptions("ghost")
    assert get_customers(["ghost"]) == {}


def test_change_plan_keeps_the_history(plans: None) -> None:
    create_customer("cus_1", "basic", starts_at=JAN)
    assert change_plan("cus_1", "pro", FEB, now=MAR).plan_code == "pro"
    customer = change_plan("cus_1", "enterprise", MAR, now=MAR)
    assert customer.plan_code == "enterprise"
    assert get_customer("cus_1").plan_code == "enterprise"
    history = [(s.plan_code, s.starts_at, s.ends_at) for s in subscriptions("cus_1")]
    assert history == [("basic", JAN, FEB), ("pro", FEB, MAR), ("enterprise", MAR, None)]


def test_the_moment_of_a_change_belongs_to_the_new_plan(plans: None) -> None:
    create_customer("cus_1", "basic", starts_at=JAN)
    change_plan("cus_1", "pro", FEB, now=MAR)

    def plan_at(at: datetime) -> str | None:
        found: Subscription | None = subscription_at("cus_1", at)
        return found.plan_code if found else None

    assert plan_at(JAN - timedelta(microseconds=1)) is None
    assert plan_at(JAN) == "basic"
    assert plan_at(FEB - timedelta(microseconds=1)) == "basic"
    assert plan_at(FEB) == "pro"
    assert plan_at(datetime(2030, 1, 1, tzinfo=UTC)) == "pro"


def test_change_plan_validates_its_input(plans: None) -> None:
    create_customer("cus_1", "basic", starts_at=FEB)
    with pytest.raises(InvalidInput, match=r"^plan_code: unknown plan 'gold'"):
        change_plan("cus_1", "gold", MAR, now=MAR)
    with pytest.raises(InvalidInput, match=r"^at: "):
        change_plan("cus_1", "pro", JAN, now=MAR)  # before the current subscription started
    with pytest.raises(InvalidInput, match=r"^at: "):
        change_plan("cus_1", "pro", datetime(2026, 3, 1), now=MAR)
    assert [s.plan_code for s in subscriptions("cus_1")] == ["basic"]


def test_changing_to_the_current_plan_changes_nothing(plans: None) -> None:
    created = create_customer("cus_1", "basic", starts_at=JAN)
    assert change_plan("cus_1", "basic", FEB, now=MAR) == created
    assert len(subscriptions("cus_1")) == 1


def test_a_change_at_the_start_leaves_an_empty_first_subscription(plans: None) -> None:
    create_customer("cus_1", "basic", starts_at=JAN)
    change_plan("cus_1", "pro", JAN, now=FEB)
    assert subscription_at("cus_1", JAN).plan_code == "pro"  # type: ignore[union-attr]


def test_list_and_get_many(plans: None) -> None:
    create_customer("cus_b", "pro", starts_at=JAN)
    create_customer("cus_a", "basic", starts_at=JAN)
    create_customer("cus_c", "pro", starts_at=JAN)
    assert [c.id for c in list_customers()] == ["cus_a", "cus_b", "cus_c"]
    assert [c.id for c in list_customers(plan_code="pro")] == ["cus_b", "cus_c"]
    assert set(get_customers(["cus_a", "cus_c", "nobody", "cus_a"])) == {"cus_a", "cus_c"}


def test_writes_join_the_callers_transaction(plans: None, db: psycopg.Connection) -> None:
    from storage import db as storage_db

    with pytest.raises(RuntimeError), storage_db.connection() as conn:
        create_customer("cus_1", "basic", starts_at=JAN, conn=conn)
        assert get_customer("cus_1", conn=conn).id == "cus_1"
        raise RuntimeError("the caller's transaction fails")
    assert db.execute("SELECT count(*) FROM customers").fetchone() == (0,)
