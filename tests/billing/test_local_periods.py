"""Customers billed in their own time zone, around whatever day it is: the period boundaries
are their local midnights (an hour off a whole day's length in UTC across a DST change), live
usage reads the current segment, and a close bills the period that ended last.

Date-sensitive: the hard-days job runs these on the DST days of Berlin and Los Angeles, at
month and year ends and on 29 February (tests/hard_days.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dramatiq.brokers.stub import StubBroker

from pricing.periods import billing_period
from services import invoice_lifecycle as invoices
from services.usage import current_usage
from storage.invoices import jobs as invoice_jobs
from tasks import billing
from tests.billing.helpers import customer, deliver, event, ingest

pytestmark = [pytest.mark.usefixtures("plans"), pytest.mark.date_sensitive]

_INSTANT = timedelta(microseconds=1)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Los_Angeles", "UTC"])
def test_a_local_customer_is_billed_by_its_own_midnights(
    zone: str, stub_broker: StubBroker
) -> None:
    now = datetime.now(UTC)
    current = billing_period(now, timezone=zone)
    previous = billing_period(current.start - _INSTANT, timezone=zone)
    for period in (current, previous):
        local = period.start.astimezone(ZoneInfo(zone))
        assert (local.day, local.time()) == (1, time(0))
    started = billing_period(previous.start - _INSTANT).start  # a period before, in UTC
    customer("local", "small", starts_at=started, timezone=zone)

    # The last instant of the previous period, the first of the current one, and now.
    ingest(
        [
            event("local", current.start - _INSTANT, quantity=1),
            event("local", current.start, quantity=10),
            event("local", now, quantity=100),
        ],
        now=now,
    )

    usage = current_usage("local").to_json()
    assert (usage["period_start"], usage["period_end"]) == (
        current.start.isoformat(),
        current.end.isoformat(),
    )
    assert usage["metrics"]["api_calls"]["used"] == "110"

    (job_id,) = billing.fan_out_period(None)  # each customer's last ended period
    deliver(stub_broker)
    (job,) = invoice_jobs.get_jobs([job_id])
    assert (job.status, job.period_start, job.period_end) == (
        "succeeded",
        previous.start,
        previous.end,
    )
    invoice = invoices.find_invoice("local", previous.start)
    assert invoice is not None
    assert invoice.to_json()["usage"]["api_calls"] == "1"
    assert invoices.find_invoice("local", current.start) is None  # has not ended
