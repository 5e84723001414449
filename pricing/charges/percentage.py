"""Percentage pricing: a rate on each event's amount plus a fixed amount per paid event, after
a free allowance, each paid event bounded by a minimum and a maximum (Lago's `percentage`).

The allowance covers events in time order until `free_events` events or `free_amount` of amount
have been used, whichever comes first. A zero in either means no allowance by that measure, as
in Lago (`free_amount: "0"` with `free_events: 3`: the first 3 events are free, whatever their
amounts); both absent or zero: no allowance. An event wholly inside it is free (no rate, no fixed
amount, no minimum); the event that crosses `free_amount` pays the rate on its part above the
allowance plus the fixed amount. A negative amount (a refund) is priced as 0: a percentage
charge does not pay fees back.

`PercentageState` is the exact summary the live path keeps instead of every event.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Self

from pydantic import model_validator

from pricing.charges.base import ChargeFields, ChargeResult, EventAmount, MetricUsage
from pricing.errors import PlanError
from pricing.fields import Count, NonNegativeDecimal, Percent
from pricing.money import exact_arithmetic, format_decimal

#: Timestamp given to the single event that a plain quantity stands for.
_NO_TIME = datetime.min.replace(tzinfo=UTC)


class PercentageCharge(ChargeFields):
    """`{metric: payments, model: percentage, rate_percent: "1.3", fixed_amount: "0.30",
    free_events: 3, free_amount: "250", per_event_min: "0.50", per_event_max: "12.00"}`."""

    model: Literal["percentage"] = "percentage"
    rate_percent: Percent
    fixed_amount: NonNegativeDecimal = Decimal(0)
    free_events: Count | None = None
    free_amount: NonNegativeDecimal | None = None
    per_event_min: NonNegativeDecimal | None = None
    per_event_max: NonNegativeDecimal | None = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Self:
        if (
            self.per_event_min is not None
            and self.per_event_max is not None
            and self.per_event_min > self.per_event_max
        ):
            raise PlanError([("per_event_min", "must not be greater than per_event_max")])
        return self

    @property
    def event_allowance(self) -> int | None:
        """How many events are free at most; None when the events are not counted (a
        `free_events` of 0 counts as absent, as in Lago)."""
        return self.free_events or None

    @property
    def amount_allowance(self) -> Decimal | None:
        """How much amount is free at most; None when the amount is not counted (a
        `free_amount` of 0 counts as absent, as in Lago)."""
        return self.free_amount or None


def event_charge(charge: PercentageCharge, paid_amount: Decimal) -> Decimal:
    """What one paid event costs: the rate on its paid part plus the fixed amount, bounded."""
    value = paid_amount * charge.rate_percent / 100 + charge.fixed_amount
    if charge.per_event_min is not None:
        value = max(value, charge.per_event_min)
    if charge.per_event_max is not None:
        value = min(value, charge.per_event_max)
    return value


def _order(event: EventAmount) -> tuple[datetime, str]:
    return event[0], event[1]


def _exhausted(charge: PercentageCharge, used_events: int, used_amount: Decimal) -> bool:
    free_events, free_amount = charge.event_allowance, charge.amount_allowance
    by_events = free_events is not None and used_events >= free_events
    by_amount = free_amount is not None and used_amount >= free_amount
    no_allowance = free_events is None and free_amount is None
    return by_events or by_amount or no_allowance


def _walk(
    charge: PercentageCharge, ordered: Iterable[EventAmount]
) -> Iterator[tuple[EventAmount, Decimal | None, bool]]:
    """Each event (in time order) with its paid part (None when free) and whether the free
    allowance was still open when it came. The open events form a prefix: adding events can
    only shorten it, which is what lets `PercentageState` forget everything after it."""
    used_events, used_amount = 0, Decimal(0)
    free_amount = charge.amount_allowance
    for event in ordered:
        amount = max(event[2], Decimal(0))
        if _exhausted(charge, used_events, used_amount):
            yield event, amount, False
            continue
        used_events += 1
        used_amount += amount
        if free_amount is None or used_amount <= free_amount:
            yield event, None, True
        else:
            yield event, used_amount - free_amount, True


@dataclass
class _Tally:
    """Running totals of paid events, as reported in the result."""

    amount: Decimal = Decimal(0)
    billable: Decimal = Decimal(0)
    paid: int = 0
    free: int = 0

    def add(self, charge: PercentageCharge, paid_part: Decimal | None) -> None:
        if paid_part is None:
            self.free += 1
        else:
            self.paid += 1
            self.billable += paid_part
            self.amount += event_charge(charge, paid_part)

    def result(self, quantity: Decimal) -> ChargeResult:
        return ChargeResult(
            amount=self.amount,
            quantity=quantity,
            included=Decimal(0),
            billable=self.billable,
            details={
                "events": str(self.paid + self.free),
                "paid_events": str(self.paid),
                "free_events_used": str(self.free),
            },
        )


def price(charge: PercentageCharge, usage: MetricUsage) -> ChargeResult:
    """Σ over paid events of min/max-bounded (rate × paid part + fixed amount)."""
    events = usage.events if usage.events is not None else ((_NO_TIME, "", usage.quantity),)
    tally = _Tally()
    with exact_arithmetic():
        for _event, paid_part, _open in _walk(charge, sorted(events, key=_order)):
            tally.add(charge, paid_part)
    return tally.result(usage.quantity)


def _touched(charge: PercentageCharge, ordered: Sequence[EventAmount]) -> tuple[EventAmount, ...]:
    return tuple(event for event, _paid, is_open in _walk(charge, ordered) if is_open)


@dataclass
class PercentageState:
    """An exact, mergeable summary of a percentage charge's events in one period.

    `paid_total` prices every event as if it were paid; `head` keeps the earliest events the
    free allowance can still touch, so `charge` can take those back and price them properly.
    Every state merged together must have been built with the same charge.
    """

    count: int = 0
    amount_total: Decimal = Decimal(0)
    positive_total: Decimal = Decimal(0)
    paid_total: Decimal = Decimal(0)
    head: tuple[EventAmount, ...] = ()

    @classmethod
    def empty(cls) -> PercentageState:
        return cls()

    def add(
        self, charge: PercentageCharge, timestamp: datetime, event_id: str, amount: Decimal
    ) -> None:
        """Count one event (in any order relative to the others)."""
        event = (timestamp, event_id, amount)
        with exact_arithmetic():
            positive = max(amount, Decimal(0))
            self.count += 1
            self.amount_total += amount
            self.positive_total += positive
            self.paid_total += event_charge(charge, positive)
            if not _exhausted(charge, 0, Decimal(0)):
                head = list(self.head)
                bisect.insort(head, event, key=_order)
                self.head = _touched(charge, head)

    def merge(self, other: PercentageState, charge: PercentageCharge) -> PercentageState:
        """The state of both parts' events together (commutative and associative)."""
        with exact_arithmetic():
            return PercentageState(
                count=self.count + other.count,
                amount_total=self.amount_total + other.amount_total,
                positive_total=self.positive_total + other.positive_total,
                paid_total=self.paid_total + other.paid_total,
                head=_touched(charge, sorted((*self.head, *other.head), key=_order)),
            )

    def charge(self, charge: PercentageCharge) -> ChargeResult:
        """The same result as `price` given every event that went into this state."""
        tally = _Tally()
        with exact_arithmetic():
            tally.amount = self.paid_total
            tally.billable = self.positive_total
            tally.paid = self.count - len(self.head)
            for event, paid_part, _open in _walk(charge, self.head):
                positive = max(event[2], Decimal(0))
                tally.amount -= event_charge(charge, positive)
                tally.billable -= positive
                tally.add(charge, paid_part)
        return tally.result(self.amount_total)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: decimals as strings, timestamps as ISO 8601."""
        return {
            "count": self.count,
            "amount_total": format_decimal(self.amount_total),
            "positive_total": format_decimal(self.positive_total),
            "paid_total": format_decimal(self.paid_total),
            "head": [[ts.isoformat(), eid, format_decimal(amt)] for ts, eid, amt in self.head],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PercentageState:
        return cls(
            count=int(data["count"]),
            amount_total=Decimal(data["amount_total"]),
            positive_total=Decimal(data["positive_total"]),
            paid_total=Decimal(data["paid_total"]),
            head=tuple(
                (datetime.fromisoformat(ts), str(eid), Decimal(amount))
                for ts, eid, amount in data["head"]
            ),
        )
