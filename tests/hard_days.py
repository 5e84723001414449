"""The hard-days job: every test marked `date_sensitive` runs once on the real clock and once
with the clock pinned (frozen, with time-machine) to each of the days that break date code.

`pytest -m date_sensitive` runs only those tests; `-k 2028-02-29` picks one day. Each variant's
id names the instant it runs at (`test_x[today]`, `test_x[2028-02-29T12:00:00Z]`).

What the pinned clock moves: `datetime.now`, `date.today`, `time.time` (so Dramatiq's message
times) in this process, in every thread, and the local zone (TZ). What it cannot move:
PostgreSQL's `now()`, Redis's own clock (key expiry), `time.monotonic` and other processes.
The code therefore takes every "now" that a decision depends on from Python (see README,
Development). Redis expires a key whose absolute expiry is in *its* past at once, and counters
expire 40 days after their segment ends: a hard day that has fallen more than a week behind
the real date is moved 28 years later, which keeps its weekday, its leap year and its DST
Sundays (the Gregorian calendar repeats every 28 years between 1901 and 2099).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

MARKER = "date_sensitive"

#: (why it is hard, the instant in UTC, the machine's local zone then or None for the real one).
#: The local zone is pinned too (TZ, as time-machine does for a zoned destination), so code
#: that wrongly reads the machine's local date (naive `datetime.now()`, `date.today()`) sees a
#: different day or offset from UTC: at the year change it is already, or still, another year.
HARD_DAYS: tuple[tuple[str, str, str | None], ...] = (
    ("1st of a month, just after midnight", "2026-12-01T00:00:30Z", None),
    ("last day of a 30-day month, just before midnight", "2026-11-30T23:59:59Z", None),
    ("last day of a 31-day month", "2027-01-31T12:00:00Z", None),
    ("29 February", "2028-02-29T12:00:00Z", None),
    ("31 December, one second to the new year", "2026-12-31T23:59:59Z", "Asia/Tokyo"),
    ("1 January, just after midnight", "2027-01-01T00:00:30Z", "America/Los_Angeles"),
    ("Europe/Berlin springs forward (03:30 CEST)", "2027-03-28T01:30:00Z", "Europe/Berlin"),
    (
        "Europe/Berlin falls back, last day of October (02:30 CEST)",
        "2027-10-31T00:30:00Z",
        "Europe/Berlin",
    ),
    (
        "America/Los_Angeles springs forward (03:30 PDT)",
        "2027-03-14T10:30:00Z",
        "America/Los_Angeles",
    ),
    (
        "America/Los_Angeles falls back (the second 01:30, PST)",
        "2027-11-07T09:30:00Z",
        "America/Los_Angeles",
    ),
)

#: A hard day this far behind the real date moves 28 years on (Redis expiry; see above).
_STALE_AFTER = timedelta(days=7)
_CYCLE_YEARS = 28


@dataclass(frozen=True)
class PinnedClock:
    """Where a test's clock is frozen: `instant` (UTC) and the machine's local zone then."""

    instant: datetime
    local_zone: str | None = None


def pinned_instant(iso: str, real_now: datetime) -> datetime:
    """The instant (UTC) a hard day is pinned to: itself, or 28 years on while it is stale."""
    instant = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    while instant < real_now - _STALE_AFTER:
        instant = instant.replace(year=instant.year + _CYCLE_YEARS)
    return instant


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker(MARKER) is None:
        return
    real_now = datetime.now(UTC)
    clocks = [PinnedClock(pinned_instant(iso, real_now), zone) for _, iso, zone in HARD_DAYS]
    metafunc.parametrize(
        "hard_day",
        [None, *clocks],
        ids=["today", *(f"{c.instant:%Y-%m-%dT%H:%M:%SZ}" for c in clocks)],
        indirect=True,
    )


@pytest.fixture(autouse=True)
def hard_day(request: pytest.FixtureRequest) -> Iterator[PinnedClock | None]:
    """The clock frozen for this test (None: the real clock). Autouse and defined in a plugin
    of the root conftest, so the clock is pinned before the tests' own fixtures read it."""
    clock: PinnedClock | None = getattr(request, "param", None)
    if clock is None:
        yield None
        return
    # A ZoneInfo destination makes time-machine set TZ too: the machine's local zone is the
    # hard day's, or UTC, whatever the machine's own.
    zone = ZoneInfo(clock.local_zone or "UTC")
    with time_machine.travel(clock.instant.astimezone(zone), tick=False):
        yield clock
