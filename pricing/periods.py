"""Billing periods in the customer's timezone: calendar or anniversary, monthly or yearly.

A period starts at local midnight (IANA zone, via zoneinfo) on its anchor day and ends at
local midnight of the next start, so a month that contains a DST change is an hour shorter
or longer in UTC. An anchor day past the end of a month is clamped to its last day (31 ->
Feb 28/29), and the next period goes back to the anchor (Mar 31).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pricing.errors import UserError, echo

INTERVALS = ("month", "year")


@dataclass(frozen=True)
class Period:
    """A half-open span [start, end) of aware instants, stored in UTC.

    Two periods are equal when their instants are. The billing settings after them (not
    compared) are filled in by `billing_period`; they serve `label` and `next_period`.
    """

    start: datetime
    end: datetime
    timezone: str = field(default="UTC", compare=False)
    interval: str = field(default="month", compare=False)
    anchor_day: int | None = field(default=None, compare=False)
    anchor_month: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.utcoffset() is None:
                raise ValueError(f"{name}: must include a UTC offset")
            object.__setattr__(self, name, value.astimezone(UTC))
        if self.end <= self.start:
            raise ValueError("a period must end after it starts")

    @property
    def label(self) -> str:
        """'2026-11' for a monthly period starting in November (local time), '2026' yearly."""
        local = local_date(self.start, self.timezone)
        return f"{local.year:04d}" if self.interval == "year" else f"{local:%Y-%m}"

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end


def zone(timezone: str) -> ZoneInfo:
    """The IANA zone, or ValueError naming it."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError("timezone", f"unknown timezone {echo(timezone)}") from None


def local_date(ts: datetime, timezone: str) -> date:
    """The calendar date of instant `ts` in `timezone`."""
    if ts.utcoffset() is None:
        raise ValueError("timestamp: must include a UTC offset")
    return ts.astimezone(zone(timezone)).date()


def days_in_period(period: Period, timezone: str) -> int:
    """Number of local calendar days the period spans (for proration by days)."""
    return (local_date(period.end, timezone) - local_date(period.start, timezone)).days


def billing_period(
    at: datetime,
    *,
    timezone: str = "UTC",
    anchor_day: int | None = None,
    interval: str = "month",
    anchor_month: int | None = None,
) -> Period:
    """The period that contains instant `at`.

    Calendar billing leaves `anchor_day` (and `anchor_month`) as None: months start on the
    1st, years on January 1. Anniversary billing passes the day (and, yearly, the month) the
    customer started on.
    """
    _check(interval, anchor_day, anchor_month)
    today = local_date(at, timezone)
    year = today.year
    month = today.month if interval == "month" else (anchor_month or 1)
    if today < _start_date(year, month, anchor_day):
        year, month = _step(year, month, interval, -1)
    period = _period(year, month, timezone, anchor_day, interval, anchor_month)
    # The local date decides, except where a DST change repeats midnight: there the instant
    # does, so that `billing_period(t).contains(t)` always holds.
    if not period.contains(at):
        year, month = _step(year, month, interval, -1 if at < period.start else 1)
        period = _period(year, month, timezone, anchor_day, interval, anchor_month)
    return period


def next_period(
    period: Period,
    *,
    timezone: str | None = None,
    anchor_day: int | None = None,
    interval: str | None = None,
    anchor_month: int | None = None,
) -> Period:
    """The period right after `period`, with its billing settings unless others are given."""
    return billing_period(
        period.end,
        timezone=timezone or period.timezone,
        anchor_day=anchor_day or period.anchor_day,
        interval=interval or period.interval,
        anchor_month=anchor_month or period.anchor_month,
    )


def period_for_label(
    label: str,
    *,
    timezone: str = "UTC",
    anchor_day: int | None = None,
    interval: str = "month",
    anchor_month: int | None = None,
) -> Period:
    """The period a label names: 'YYYY-MM' (monthly) or 'YYYY' (yearly) of its start."""
    _check(interval, anchor_day, anchor_month)
    pattern = r"(\d{4})-(\d{2})" if interval == "month" else r"(\d{4})"
    match = re.fullmatch(pattern, label)
    if not match:
        expected = "YYYY-MM" if interval == "month" else "YYYY"
        raise UserError("period", f"expected {expected}, got {echo(label)}")
    year = int(match.group(1))
    month = int(match.group(2)) if interval == "month" else (anchor_month or 1)
    if not 1 <= month <= 12:
        raise UserError("period", f"no month {month} in {echo(label)}")
    return _period(year, month, timezone, anchor_day, interval, anchor_month)


def _check(interval: str, anchor_day: int | None, anchor_month: int | None) -> None:
    if interval not in INTERVALS:
        raise UserError("interval", f"must be one of {', '.join(INTERVALS)}, got {echo(interval)}")
    if anchor_day is not None and not 1 <= anchor_day <= 31:
        raise UserError("anchor_day", f"must be between 1 and 31, got {anchor_day}")
    if anchor_month is not None and not 1 <= anchor_month <= 12:
        raise UserError("anchor_month", f"must be between 1 and 12, got {anchor_month}")


def _start_date(year: int, month: int, anchor_day: int | None) -> date:
    """The anchor day in that month, clamped to the month's last day."""
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(anchor_day or 1, last))


def _step(year: int, month: int, interval: str, count: int) -> tuple[int, int]:
    if interval == "year":
        return year + count, month
    index = year * 12 + (month - 1) + count
    return index // 12, index % 12 + 1


def _midnight(day: date, timezone: str) -> datetime:
    """Local midnight of `day` as a UTC instant (where midnight is skipped by a DST change,
    the instant the day begins)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone(timezone)).astimezone(UTC)


def _period(
    year: int,
    month: int,
    timezone: str,
    anchor_day: int | None,
    interval: str,
    anchor_month: int | None,
) -> Period:
    next_year, next_month = _step(year, month, interval, 1)
    return Period(
        start=_midnight(_start_date(year, month, anchor_day), timezone),
        end=_midnight(_start_date(next_year, next_month, anchor_day), timezone),
        timezone=timezone,
        interval=interval,
        anchor_day=anchor_day,
        anchor_month=anchor_month,
    )
