"""Billing periods: calendar and anniversary, in UTC and in zones with DST or ahead of UTC."""

from datetime import UTC, date, datetime, timedelta

import pytest

from pricing.periods import (
    Period,
    billing_period,
    days_in_period,
    local_date,
    next_period,
    period_for_label,
)

NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_calendar_month_in_utc() -> None:
    period = billing_period(utc(2026, 11, 27, 10))
    assert period == Period(utc(2026, 11, 1), utc(2026, 12, 1))
    assert period.label == "2026-11"
    assert period.contains(utc(2026, 11, 1))
    assert period.contains(utc(2026, 11, 30, 23, 59, 59, 999999))
    assert not period.contains(utc(2026, 12, 1))  # half-open
    assert billing_period(utc(2026, 12, 1)) == Period(utc(2026, 12, 1), utc(2027, 1, 1))


def test_calendar_month_in_new_york_across_the_march_dst_change() -> None:
    # DST starts 2026-03-08: March begins at midnight EST (UTC-5) and ends at midnight EDT
    # (UTC-4), so it is one hour short of 31 days.
    period = billing_period(utc(2026, 3, 15), timezone=NY)
    assert period.start == utc(2026, 3, 1, 5)
    assert period.end == utc(2026, 4, 1, 4)
    assert period.end - period.start == timedelta(days=31, hours=-1)
    assert period.label == "2026-03"
    assert days_in_period(period, NY) == 31


def test_calendar_month_in_new_york_across_the_november_dst_change() -> None:
    # DST ends 2026-11-01 at 02:00: November begins at midnight EDT, ends at midnight EST.
    period = billing_period(utc(2026, 11, 15), timezone=NY)
    assert (period.start, period.end) == (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))
    assert period.end - period.start == timedelta(days=30, hours=1)
    assert days_in_period(period, NY) == 30
    # October is 31 whole days: both ends in EDT.
    october = billing_period(utc(2026, 10, 15), timezone=NY)
    assert october.end - october.start == timedelta(days=31)
    assert october.end == period.start


def test_new_york_boundary_instants() -> None:
    # 2026-11-01 03:59 UTC is still Oct 31 in New York; 04:00 UTC is Nov 1 00:00 EDT.
    assert billing_period(utc(2026, 11, 1, 3, 59), timezone=NY).label == "2026-10"
    assert billing_period(utc(2026, 11, 1, 4), timezone=NY).label == "2026-11"


def test_tokyo_is_ahead_of_utc() -> None:
    # 2026-10-31 16:00 UTC is 2026-11-01 01:00 in Tokyo: November's usage, not October's.
    period = billing_period(utc(2026, 10, 31, 16), timezone="Asia/Tokyo")
    assert period.label == "2026-11"
    assert (period.start, period.end) == (utc(2026, 10, 31, 15), utc(2026, 11, 30, 15))
    assert billing_period(utc(2026, 10, 31, 14, 59), timezone="Asia/Tokyo").label == "2026-10"
    assert local_date(utc(2026, 10, 31, 16), "Asia/Tokyo") == date(2026, 11, 1)


def test_anniversary_day_31_in_a_non_leap_february() -> None:
    january = billing_period(utc(2026, 2, 15), anchor_day=31)
    assert (january.start, january.end) == (utc(2026, 1, 31), utc(2026, 2, 28))
    february = billing_period(utc(2026, 2, 28), anchor_day=31)
    assert (february.start, february.end) == (utc(2026, 2, 28), utc(2026, 3, 31))
    assert days_in_period(february, "UTC") == 31
    # the anchor comes back after the short month
    assert next_period(february, anchor_day=31) == Period(utc(2026, 3, 31), utc(2026, 4, 30))


def test_anniversary_day_31_in_a_leap_february() -> None:
    period = billing_period(utc(2028, 3, 1), anchor_day=31)
    assert (period.start, period.end) == (utc(2028, 2, 29), utc(2028, 3, 31))
    assert billing_period(utc(2028, 2, 28, 23), anchor_day=31).start == utc(2028, 1, 31)


def test_anniversary_in_a_zone() -> None:
    period = billing_period(utc(2026, 3, 20), timezone=NY, anchor_day=10)
    # Mar 10 00:00 EDT (after the Mar 8 change) to Apr 10 00:00 EDT
    assert (period.start, period.end) == (utc(2026, 3, 10, 4), utc(2026, 4, 10, 4))
    assert period.label == "2026-03"
    before = billing_period(utc(2026, 3, 10, 3, 59), timezone=NY, anchor_day=10)
    assert (before.start, before.end) == (utc(2026, 2, 10, 5), utc(2026, 3, 10, 4))


def test_calendar_year() -> None:
    period = billing_period(utc(2026, 7, 4), interval="year")
    assert (period.start, period.end) == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert period.label == "2026"
    assert days_in_period(period, "UTC") == 365


def test_anniversary_year() -> None:
    period = billing_period(utc(2026, 3, 1), interval="year", anchor_month=7, anchor_day=15)
    assert (period.start, period.end) == (utc(2025, 7, 15), utc(2026, 7, 15))
    assert period.label == "2025"
    leap = billing_period(utc(2029, 1, 1), interval="year", anchor_month=2, anchor_day=29)
    assert (leap.start, leap.end) == (utc(2028, 2, 29), utc(2029, 2, 28))


def test_yearly_in_tokyo() -> None:
    period = billing_period(utc(2026, 12, 31, 15), timezone="Asia/Tokyo", interval="year")
    assert period.label == "2027"
    assert period.start == utc(2026, 12, 31, 15)


def test_period_for_label() -> None:
    assert period_for_label("2026-11", timezone=NY) == billing_period(
        utc(2026, 11, 15), timezone=NY
    )
    assert period_for_label("2026-02", anchor_day=31).start == utc(2026, 2, 28)
    assert period_for_label("2026", interval="year").end == utc(2027, 1, 1)
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        period_for_label("2026-1")
    with pytest.raises(ValueError, match="no month 13"):
        period_for_label("2026-13")
    with pytest.raises(ValueError, match="expected YYYY"):
        period_for_label("2026-01", interval="year")


def test_consecutive_periods_tile_time() -> None:
    period = billing_period(utc(2026, 1, 5), timezone=NY, anchor_day=30)
    for _ in range(24):
        following = next_period(period)
        assert following.start == period.end
        assert period.label < following.label
        period = following


def test_next_period_remembers_the_billing_settings() -> None:
    period = billing_period(utc(2026, 1, 5), timezone=NY, anchor_day=31)
    following = next_period(period)
    assert following.start == period.end == utc(2026, 1, 31, 5)
    assert following.end == utc(2026, 2, 28, 5)  # still anchored on the 31st, in New York
    yearly = billing_period(utc(2026, 3, 1), interval="year", anchor_month=7, anchor_day=15)
    assert next_period(yearly) == Period(utc(2026, 7, 15), utc(2027, 7, 15))


def test_every_instant_is_in_its_own_period() -> None:
    at = utc(2026, 3, 1)
    while at < utc(2026, 4, 2):
        assert billing_period(at, timezone=NY, anchor_day=8).contains(at)
        at += timedelta(minutes=97)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        billing_period(utc(2026, 1, 1), timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="anchor_day"):
        billing_period(utc(2026, 1, 1), anchor_day=32)
    with pytest.raises(ValueError, match="interval"):
        billing_period(utc(2026, 1, 1), interval="week")
    with pytest.raises(ValueError, match="UTC offset"):
        billing_period(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="end after it starts"):
        Period(utc(2026, 1, 2), utc(2026, 1, 1))
