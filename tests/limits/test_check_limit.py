"""check_limit against the real counters: the hard-limit boundary, throttling, the spend cap
over tiered pricing, overrides, and what this process recorded but has not seen ingested."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from services.limits import check_limit
from services.overrides import set_overrides
from services.usage import current_usage
from storage.catalog.limits import OverrideChange
from tasks.ingest import ingest_events
from tasks.names import INGEST_QUEUE
from tasks.recorder import UsageRecorder
from tests.limits.helpers import setup_capped
from tests.metering.helpers import batch, event


@pytest.fixture(autouse=True)
def customer(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.ingest.request_invoice_refresh", lambda *args: None)
    setup_capped()


def use(quantity: int, metric: str = "api_calls") -> None:
    ingest_events(batch([event(metric, quantity=quantity)]))


@pytest.mark.date_sensitive  # resets_at and the base fee follow the clock's period
def test_the_hard_limit_allows_exactly_the_limit_and_not_one_more() -> None:
    use(299)
    last = check_limit("cus_1", "api_calls")
    assert (last.allowed, last.reason, last.used, last.limit, last.remaining) == (
        True,
        None,
        299,
        300,
        1,
    )
    assert last.resets_at == current_usage("cus_1").segment.period.end
    over = check_limit("cus_1", "api_calls", 2)
    assert (over.allowed, over.reason) == (False, "hard_limit")
    use(1)
    assert check_limit("cus_1", "api_calls").reason == "hard_limit"
    assert check_limit("cus_1", "api_calls", 0).allowed  # looking costs nothing
    document = check_limit("cus_1", "api_calls").to_json()
    assert document["used"] == "300" and document["remaining"] == "0"
    assert document["limit"] == "300" and document["allowed"] is False


def test_a_gauge_limit_compares_the_new_level_not_a_sum() -> None:
    set_overrides("cus_1", OverrideChange(spend_cap=Decimal(1000)))
    use(40, "storage")
    assert check_limit("cus_1", "peak_gb", 50).allowed  # peak 50 == limit
    assert check_limit("cus_1", "peak_gb", 51).reason == "hard_limit"


def test_throttle_turns_on_at_the_share_of_included_usage() -> None:
    use(93)
    assert not check_limit("cus_1", "api_calls").throttle  # 94 < 95 % of 100
    use(1)
    decision = check_limit("cus_1", "api_calls")
    assert decision.throttle and decision.allowed  # 95: throttled, not refused


@pytest.mark.date_sensitive  # resets_at and the base fee follow the clock's period
def test_the_spend_cap_prices_the_request_with_the_tiers() -> None:
    set_overrides("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(10_000)))
    use(250)  # 10.00 base + 100 × 0.10 + 50 × 0.05 = 22.50
    assert current_usage("cus_1").estimated_total == Decimal("22.50")
    at_cap = check_limit("cus_1", "api_calls", 50)  # 50 × 0.05 more: 25.00, the cap
    assert at_cap.allowed and at_cap.estimated_total == Decimal("25.00")
    over = check_limit("cus_1", "api_calls", 51)
    assert (over.allowed, over.reason, over.estimated_total) == (
        False,
        "spend_cap",
        Decimal("25.05"),
    )
    assert over.to_json()["estimated_total"] == "25.05" and over.to_json()["spend_cap"] == "25.00"
    use(50)  # what check_limit estimated is what `meter usage` then shows
    assert current_usage("cus_1").estimated_total == at_cap.estimated_total


def test_overrides_beat_the_plan() -> None:
    set_overrides("cus_1", OverrideChange(spend_cap=Decimal(100)))
    use(300)
    assert not check_limit("cus_1", "api_calls").allowed
    set_overrides("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(301)))
    assert check_limit("cus_1", "api_calls").allowed
    set_overrides("cus_1", OverrideChange(spend_cap=Decimal("20.00")))  # bill is 27.50
    assert check_limit("cus_1", "api_calls").reason == "spend_cap"


@pytest.fixture
def stub_recorder() -> Iterator[tuple[UsageRecorder, StubBroker]]:
    """A recorder that sends only when flushed, to a broker the test reads itself."""
    broker = StubBroker()
    recorder = UsageRecorder(broker, flush_interval=3600, batch_size=100_000)
    yield recorder, broker
    recorder.close(timeout=5)


def deliver(broker: StubBroker) -> None:
    """Run the ingest actor on every batch the stub broker holds."""
    queue = broker.queues[INGEST_QUEUE]
    while not queue.empty():
        message: dramatiq.Message[Any] = dramatiq.Message.decode(queue.get())
        ingest_events(message.args[0])


def test_this_processs_unflushed_events_count(
    stub_recorder: tuple[UsageRecorder, StubBroker],
) -> None:
    recorder, broker = stub_recorder
    use(290)
    for _ in range(10):
        recorder.record("cus_1", "api_calls")  # buffered: not sent, not ingested
    buffered = check_limit("cus_1", "api_calls", in_flight=recorder)
    assert (buffered.used, buffered.pending, buffered.allowed) == (300, 10, False)
    assert check_limit("cus_1", "api_calls").allowed  # without them: 290 + 1
    recorder.flush()  # sent, still not ingested: still pending
    assert check_limit("cus_1", "api_calls", in_flight=recorder).pending == 10
    deliver(broker)  # ingested: in the counters, no longer pending (never counted twice)
    ingested = check_limit("cus_1", "api_calls", in_flight=recorder)
    assert (ingested.used, ingested.pending, ingested.allowed) == (300, 0, False)
    assert recorder.pending("cus_1", "api_calls").count == 0


def test_pending_events_count_for_every_metric_reading_them(
    stub_recorder: tuple[UsageRecorder, StubBroker],
) -> None:
    recorder, _ = stub_recorder
    recorder.record("cus_1", "api_calls", 7)
    recorder.record("cus_1", "api_calls", 5)
    calls = check_limit("cus_1", "api_calls", in_flight=recorder)
    requests = check_limit("cus_1", "requests", in_flight=recorder)  # a count of api_calls
    assert (calls.used, requests.used) == (12, 2)


def test_the_import_beside_record_usage_counts_the_default_recorder(
    stub_recorder: tuple[UsageRecorder, StubBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import check_limit as producer_check
    from tasks import record_usage

    recorder, _ = stub_recorder
    monkeypatch.setattr("tasks.producer._default", recorder)
    use(299)
    record_usage("cus_1", "api_calls")
    decision = producer_check("cus_1", "api_calls")
    assert (decision.used, decision.allowed) == (300, False)
    assert producer_check("cus_1", "api_calls", 0).allowed


def test_bad_quantities_are_refused_with_the_field() -> None:
    from pricing.errors import UserError

    for bad in ("-1", "lots", "NaN"):
        with pytest.raises(UserError) as caught:
            check_limit("cus_1", "api_calls", bad)
        assert caught.value.field == "quantity"


def test_usage_past_the_hard_limit_is_still_recorded_and_counted() -> None:
    use(300)
    use(7)  # the application did not ask, or served anyway: usage is a fact
    decision = check_limit("cus_1", "api_calls", 0)
    assert (decision.used, decision.remaining, decision.allowed) == (307, 0, False)
    assert current_usage("cus_1").metrics["api_calls"].used == 307


def test_the_spend_cap_estimate_follows_every_metric_and_a_plan_change() -> None:
    """check_limit remembers each charge's amount per customer (`pricing.estimate.ChargeMemo`):
    usage of another metric, or a move to another plan, is priced anew; every estimate equals
    what `meter usage` shows."""
    from services.customers import change_plan
    from tests.limits.helpers import PLAN as CAPPED

    set_overrides("cus_1", OverrideChange(metric="api_calls", hard_limit=Decimal(10_000)))

    def estimate() -> Decimal:
        check = check_limit("cus_1", "api_calls", 0)
        assert check.estimated_total is not None
        assert check.estimated_total == current_usage("cus_1").estimated_total
        return check.estimated_total

    use(150)
    assert estimate() == Decimal("15.00")  # 10.00 + 50 × 0.10
    use(8, "storage")  # peak_gb 8: 3 × 1.00, a charge the checked metric does not touch
    assert estimate() == Decimal("18.00")
    use(20, "storage")
    assert estimate() == Decimal("30.00")  # peak 20: 15 × 1.00
    use(10)
    assert estimate() == Decimal("31.00")
    dearer = CAPPED.replace("code: capped", "code: dearer").replace(
        'unit_amount: "1.00"', 'unit_amount: "2.00"'
    )
    setup_capped("cus_other", dearer)  # installs the plan
    change_plan("cus_1", "dearer")
    # The new plan's segment at the same peak as before: the memo's input for that charge is
    # unchanged, only the plan version tells that 15 units now cost 2.00 each.
    use(20, "storage")
    assert check_limit("cus_1", "api_calls", 0).reason == "spend_cap"
    assert estimate() > Decimal("30.00")
