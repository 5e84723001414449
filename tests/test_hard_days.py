"""The hard-days job itself: the clock really is pinned, and a hard day moved on (because it
has fallen behind the real date) is still the same kind of day."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.hard_days import HARD_DAYS, PinnedClock, pinned_instant

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
ZONES = {"Berlin": ZoneInfo("Europe/Berlin"), "Los_Angeles": ZoneInfo("America/Los_Angeles")}


@pytest.mark.date_sensitive
def test_the_clock_is_frozen_at_the_hard_day(hard_day: PinnedClock | None) -> None:
    if hard_day is None:
        return  # the real clock: nothing is pinned
    assert datetime.now(UTC) == hard_day.instant
    assert time.time() == hard_day.instant.timestamp()
    # The machine's local zone is the hard day's (UTC unless one is named).
    zone = ZoneInfo(hard_day.local_zone or "UTC")
    local = datetime.now()  # naive: the machine's local wall clock
    assert local == hard_day.instant.astimezone(zone).replace(tzinfo=None)
    time.sleep(0.01)
    assert datetime.now(UTC) == hard_day.instant  # frozen: no boundary is crossed mid-test


def _dst_changes_on(day: date, zone: ZoneInfo) -> bool:
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.utcoffset() != (start + timedelta(days=1)).astimezone(zone).utcoffset()


@pytest.mark.parametrize("real_now", [LONG_AGO, datetime(2031, 6, 1, tzinfo=UTC)])
def test_each_hard_day_is_the_kind_of_day_it_claims(real_now: datetime) -> None:
    for why, iso, _ in HARD_DAYS:
        instant = pinned_instant(iso, real_now)
        assert instant >= real_now - timedelta(days=7)
        original = pinned_instant(iso, LONG_AGO)
        assert (instant - original.replace(year=instant.year)) == timedelta(0)
        assert instant.weekday() == original.weekday()
        nxt = instant + timedelta(days=1)
        if why.startswith("1st") or why.startswith("1 January"):
            assert instant.day == 1
        if why.startswith("last day"):
            assert nxt.day == 1
        if why.startswith("29 February"):
            assert (instant.month, instant.day) == (2, 29)
        if why.startswith("31 December"):
            assert (instant.month, instant.day) == (12, 31)
        for name, zone in ZONES.items():
            if name in why:
                assert _dst_changes_on(instant.astimezone(zone).date(), zone), why
