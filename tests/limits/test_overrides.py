"""Per-customer overrides beat the plan; a change is seen at once by a process that cached
the old ones (the revision key), and is refused with the field when it makes no sense."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.errors import UserError
from services.overrides import limits_of, set_overrides
from storage.catalog.limits import OverrideChange, read_overrides
from storage.errors import NotFound
from tests.limits.helpers import setup_capped


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> None:
    setup_capped()


def test_the_plan_limits_apply_without_overrides() -> None:
    limits = limits_of("cus_1", "api_calls")
    assert (limits.included, limits.hard_limit, limits.throttle_at) == (100, 300, Decimal("0.95"))
    assert limits.throttle_units == 95
    assert limits.spend_cap == Decimal("25.00")
    assert limits_of("cus_1", "requests").hard_limit is None


def test_overrides_beat_the_plan_and_clear_back_to_it() -> None:
    set_overrides("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(1000)))
    set_overrides("cus_1", OverrideChange(spend_cap=Decimal("99.50")))
    limits = limits_of("cus_1", "api_calls")
    assert (limits.hard_limit, limits.throttle_at, limits.spend_cap) == (
        1000,
        Decimal("0.95"),
        Decimal("99.50"),
    )
    set_overrides("cus_1", OverrideChange(metric="api_calls", throttle_at=Decimal("0.5")))
    assert (
        limits_of("cus_1", "api_calls").hard_limit,
        limits_of("cus_1", "api_calls").throttle_at,
    ) == (
        1000,
        Decimal("0.5"),
    )
    set_overrides("cus_1", OverrideChange(metric="api_calls", clear_hard_limit=True))
    set_overrides("cus_1", OverrideChange(clear_spend_cap=True))
    limits = limits_of("cus_1", "api_calls")
    assert (limits.hard_limit, limits.throttle_at, limits.spend_cap) == (300, Decimal("0.5"), 25)
    set_overrides("cus_1", OverrideChange(metric="api_calls", clear_throttle_at=True))
    assert read_overrides("cus_1").metrics == {}


def test_a_cached_reader_sees_a_change_made_elsewhere() -> None:
    assert limits_of("cus_1", "api_calls").hard_limit == 300  # cached now
    # Another process changes the rows and the revision (not this process's cache).
    from storage.catalog.limits import apply_change

    apply_change("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(7)))
    assert limits_of("cus_1", "api_calls").hard_limit == 7


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (OverrideChange(metric="nope", hard_limit=Decimal(1)), "--metric"),
        (OverrideChange(hard_limit=Decimal(1)), "--metric"),
        (OverrideChange(metric="api_calls", hard_limit=Decimal(-1)), "--hard-limit"),
        (OverrideChange(metric="api_calls", throttle_at=Decimal(0)), "--throttle-at"),
        (OverrideChange(spend_cap=Decimal("-1")), "--spend-cap"),
    ],
)
def test_bad_overrides_name_the_option(change: OverrideChange, field: str) -> None:
    with pytest.raises(UserError) as caught:
        set_overrides("cus_1", change)
    assert caught.value.field == field


def test_unknown_customer_and_metric_are_not_found() -> None:
    with pytest.raises(NotFound):
        limits_of("nobody", "api_calls")
    with pytest.raises(NotFound, match="metric"):
        limits_of("cus_1", "nope")
