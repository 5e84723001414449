"""Invoices from the rollups: proration, time zones, idempotence, lifecycle, late usage."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from pricing.rating import rate, usage_from_events
from services import invoice_lifecycle as invoices
from services.customers import change_plan
from storage.catalog.cache import catalog, load_contexts
from storage.errors import Conflict, InvalidInput
from storage.ledger import events as ledger
from tasks import billing
from tests.billing.helpers import amounts, customer, event, ingest, utc
from tests.conftest import SessionServers

pytestmark = pytest.mark.usefixtures("plans")

JANUARY = utc(2026, 1, 1)


def test_plan_change_mid_period_prorates_and_prices_each_plan_on_its_own_usage() -> None:
    customer("up", "small", starts_at=utc(2025, 12, 1))
    change_plan("up", "big", utc(2026, 1, 15, 10), now=utc(2026, 1, 15, 10))
    seats = [event("up", utc(2026, 1, 6), "seats", properties={"user_id": u}) for u in "abcd"]
    ingest(
        [
            event("up", utc(2026, 1, 5), quantity=300),
            *seats,
            event("up", utc(2026, 1, 20), quantity=1500),
            event("up", utc(2026, 1, 21), "seats", properties={"user_id": "a"}),
        ]
    )
    invoice = invoices.generate("up", JANUARY)
    document = invoice.to_json()
    assert [s["plan"] for s in document["segments"]] == ["small", "big"]
    assert [(s["days"], s["period_days"]) for s in document["segments"]] == [(14, 31), (17, 31)]
    assert amounts(document) == [
        ("base_fee", None, Decimal("45.16")),  # 14/31 × 100
        ("usage", "api_calls", Decimal("20.00")),  # small: 100 free, 200 × 0.10
        ("usage", "storage_gb", Decimal("0.00")),
        ("usage", "seats", Decimal("16.00")),  # small: 4 seats × 4 (volume tier 2)
        ("base_fee", None, Decimal("109.68")),  # 17/31 × 200
        ("usage", "api_calls", Decimal("25.00")),  # big: 1000 free, 500 × 0.05
        ("usage", "storage_gb", Decimal("0.00")),
        ("usage", "seats", Decimal("3.00")),  # big: 1 seat × 3
    ]
    assert document["subtotal"] == "218.84"
    assert document["tax"] == "21.88"
    assert document["total"] == "240.72"
    assert document["plan"] == "big" and document["plan_version"] == 1
    assert document["period"] == "2026-01" and document["status"] == "draft"
    assert document["usage"]["api_calls"] == "1800"


def test_invoiced_quantities_equal_the_ledger_priced_offline() -> None:
    customer("led", "small", starts_at=utc(2025, 12, 1))
    events = [event("led", utc(2026, 1, d), quantity=d * 7) for d in range(1, 29)]
    events += [event("led", utc(2026, 1, d), "storage_gb", quantity=d % 9) for d in range(1, 29)]
    ingest(events[:30], now=utc(2026, 1, 31))
    ingest(events[30:], now=utc(2026, 1, 31))
    document = invoices.generate("led", JANUARY).to_json()
    segment = catalog.segments(load_contexts(["led"])["led"], invoices_period("led"))[0]
    offline = usage_from_events(
        segment.plan, ledger.events_between("led", segment.start, segment.end), segment.period
    )
    expected = rate(segment.plan, offline).to_json()
    assert document["lines"] == expected["lines"]
    assert document["total"] == expected["total"]


def invoices_period(customer_id: str):  # type: ignore[no-untyped-def]
    return invoices.period_of(invoices.customer_context(customer_id), JANUARY)


def test_a_customer_that_started_on_15_march_pays_17_of_31_days() -> None:
    customer("mid", "small", starts_at=utc(2026, 3, 15))
    invoice = invoices.generate("mid", utc(2026, 3, 1))
    assert invoice.period_start == utc(2026, 3, 1) and invoice.period_end == utc(2026, 4, 1)
    assert amounts(invoice.to_json())[0] == ("base_fee", None, Decimal("54.84"))


@pytest.mark.parametrize(
    ("label", "start", "end", "inside", "outside"),
    [
        # November 2025: clocks go back on the 2nd; the period is 30 days and one hour long.
        (
            "2025-11",
            utc(2025, 11, 1, 4),
            utc(2025, 12, 1, 5),
            [utc(2025, 11, 1, 4, 30), utc(2025, 12, 1, 4, 30)],  # 00:30 Nov 1, 23:30 Nov 30
            [utc(2025, 11, 1, 3, 30), utc(2025, 12, 1, 5, 30)],  # 23:30 Oct 31, 00:30 Dec 1
        ),
        # March 2026: clocks go forward on the 8th; the period is an hour shorter.
        (
            "2026-03",
            utc(2026, 3, 1, 5),
            utc(2026, 4, 1, 4),
            [utc(2026, 3, 1, 5, 30), utc(2026, 4, 1, 3, 30)],  # 00:30 Mar 1, 23:30 Mar 31
            [utc(2026, 3, 1, 4, 30), utc(2026, 4, 1, 4, 30)],  # 23:30 Feb 28, 00:30 Apr 1
        ),
    ],
)
def test_dst_months_in_new_york_run_from_local_midnight_to_local_midnight(
    label: str, start, end, inside, outside
) -> None:  # type: ignore[no-untyped-def]
    customer("ny", "small", starts_at=utc(2025, 9, 1), timezone="America/New_York")
    ingest([event("ny", at, quantity=1000) for at in inside])
    ingest([event("ny", at, quantity=1) for at in outside])
    invoice = invoices.generate("ny", start)
    document = invoice.to_json()
    assert (invoice.period_start, invoice.period_end) == (start, end)
    assert document["period"] == label and document["timezone"] == "America/New_York"
    assert document["period_start"] == start.isoformat()
    assert document["period_end"] == end.isoformat()
    assert document["usage"]["api_calls"] == "2000"
    assert amounts(document)[0] == ("base_fee", None, Decimal("100.00"))  # a whole period
    with pytest.raises(InvalidInput, match="not the start of a billing period"):
        invoices.generate("ny", start.replace(hour=0))


def test_anniversary_on_the_31st_runs_to_the_last_day_of_february() -> None:
    customer("anniv", "small", starts_at=utc(2025, 12, 31), anchor_day=31)
    ingest([event("anniv", utc(2026, 2, 27, 23), quantity=500)])
    ingest([event("anniv", utc(2026, 2, 28, 0, 30), quantity=7)])
    january = invoices.generate("anniv", utc(2026, 1, 31))
    assert (january.period_start, january.period_end) == (utc(2026, 1, 31), utc(2026, 2, 28))
    assert january.period_label == "2026-01"
    assert january.to_json()["usage"]["api_calls"] == "500"
    assert amounts(january.to_json())[0] == ("base_fee", None, Decimal("100.00"))  # 28 of 28
    february = invoices.generate("anniv", utc(2026, 2, 28))
    assert (february.period_start, february.period_end) == (utc(2026, 2, 28), utc(2026, 3, 31))
    assert february.to_json()["usage"]["api_calls"] == "7"
    with pytest.raises(InvalidInput):
        invoices.generate("anniv", utc(2026, 2, 1))


def test_generating_again_changes_nothing_and_a_period_must_have_ended() -> None:
    customer("idem", "small", starts_at=utc(2025, 12, 1))
    ingest([event("idem", utc(2026, 1, 10), quantity=250)])
    first = invoices.generate("idem", JANUARY)
    again = invoices.generate("idem", JANUARY)
    assert again == first  # same row, not even rewritten (same updated_at)
    with pytest.raises(InvalidInput, match="has not ended"):
        invoices.generate("idem", utc(2026, 2, 1), now=utc(2026, 2, 20))


def test_twenty_concurrent_generate_invoice_make_exactly_one_invoice(
    db: psycopg.Connection,
) -> None:
    customer("race", "small", starts_at=utc(2025, 12, 1))
    ingest([event("race", utc(2026, 1, 10), quantity=250)])
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            billing.generate_invoice("race", JANUARY.isoformat())  # the actor, called directly
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = db.execute("SELECT id FROM invoices WHERE customer_id = 'race'").fetchall()
    assert len(ids) == 1
    (lines,) = db.execute("SELECT count(*) FROM invoice_lines").fetchone()
    assert lines == 4  # base fee + three charges, written once
    job = db.execute(
        "SELECT status, attempts, invoice_id FROM invoice_jobs WHERE customer_id = 'race'"
    ).fetchone()
    assert job == ("succeeded", 20, ids[0][0])


def test_late_usage_during_the_grace_period_recomputes_the_draft() -> None:
    customer("late", "small", starts_at=utc(2025, 12, 1))
    ingest([event("late", utc(2026, 1, 10), quantity=300)])
    draft = invoices.generate("late", JANUARY)
    assert draft.grace_until == utc(2026, 2, 1, 1)  # METER_INVOICE_GRACE_SECONDS = 3600
    assert ("usage", "api_calls", Decimal("20.00")) in amounts(draft.to_json())

    late = ingest(
        [event("late", utc(2026, 1, 31, 23, 50), quantity=100)], now=utc(2026, 2, 1, 0, 30)
    )
    (delta,) = late.deltas
    assert invoices.refresh_after_late_usage("late", delta.start).id == draft.id  # type: ignore[union-attr]
    recomputed = invoices.get_invoice(draft.id)
    assert recomputed.status == "draft"
    assert recomputed.to_json()["usage"]["api_calls"] == "400"
    assert ("usage", "api_calls", Decimal("30.00")) in amounts(recomputed.to_json())
    assert recomputed.rollup_versions == {JANUARY.isoformat(): 2}

    assert invoices.finalize_due(now=utc(2026, 2, 1, 0, 59)) == []
    (final,) = invoices.finalize_due(now=utc(2026, 2, 1, 1))
    assert (final.id, final.status, final.number) == (draft.id, "finalized", 1)
    assert final.total == recomputed.total


def test_finalizing_recomputes_a_draft_whose_refresh_never_ran() -> None:
    customer("stale", "small", starts_at=utc(2025, 12, 1))
    ingest([event("stale", utc(2026, 1, 10), quantity=300)])
    invoices.generate("stale", JANUARY)
    ingest([event("stale", utc(2026, 1, 31), quantity=100)], now=utc(2026, 2, 1, 0, 30))
    (final,) = invoices.finalize_due(now=utc(2026, 2, 1, 2))
    assert final.to_json()["usage"]["api_calls"] == "400"


def test_late_usage_after_finalization_is_an_adjustment_on_the_next_invoice() -> None:
    customer("adj", "small", starts_at=utc(2025, 12, 1))
    ingest([event("adj", utc(2026, 1, 10), quantity=300)])
    january = invoices.finalize(invoices.generate("adj", JANUARY).id, now=utc(2026, 2, 1, 1))

    late = ingest([event("adj", utc(2026, 1, 31, 22), quantity=50)], now=utc(2026, 2, 2))
    assert invoices.refresh_after_late_usage("adj", late.deltas[0].start) is None
    assert invoices.get_invoice(january.id) == january  # the final invoice is untouched

    ingest([event("adj", utc(2026, 2, 5), quantity=10)])
    february = invoices.generate("adj", utc(2026, 2, 1))
    adjustments = [line for line in february.to_json()["lines"] if line["kind"] == "adjustment"]
    assert adjustments == [
        {
            "kind": "adjustment",
            "adjusts": "usage",
            "for_period": "2026-01",
            "for_period_start": JANUARY.isoformat(),
            "description": "Adjustment for 2026-01: late usage of api_calls",
            "plan": "small",
            "metric": "api_calls",
            "model": "graduated",
            "quantity": "50",
            "amount": "5.00",
        }
    ]
    assert february.to_json()["subtotal"] == "105.00"  # 100 base + 0 usage + 5 adjustment
    assert february.rollup_versions[JANUARY.isoformat()] == 2
    assert invoices.generate("adj", utc(2026, 2, 1)) == february  # not billed twice

    # More late January usage while February is a draft: the refresh recomputes February.
    more = ingest([event("adj", utc(2026, 1, 31, 23), quantity=10)], now=utc(2026, 2, 2, 1))
    refresh = invoices.refresh_after_late_usage("adj", more.deltas[0].start)
    assert refresh is not None and refresh.id == february.id
    refreshed = invoices.get_invoice(february.id)
    assert ("adjustment", "api_calls", Decimal("6.00")) in amounts(refreshed.to_json())

    # Once February is final, March carries no January adjustment: it was billed.
    invoices.finalize(february.id)
    march = invoices.generate("adj", utc(2026, 3, 1))
    assert [line["kind"] for line in march.to_json()["lines"]].count("adjustment") == 0
    assert invoices.get_invoice(january.id) == january


def test_a_voided_adjustment_is_billed_again_by_the_reissued_invoice() -> None:
    customer("revoid", "small", starts_at=utc(2025, 12, 1))
    ingest([event("revoid", utc(2026, 1, 10), quantity=300)])
    invoices.finalize(invoices.generate("revoid", JANUARY).id)
    ingest([event("revoid", utc(2026, 1, 31), quantity=50)], now=utc(2026, 2, 2))
    february = invoices.generate("revoid", utc(2026, 2, 1))
    assert ("adjustment", "api_calls", Decimal("5.00")) in amounts(february.to_json())
    invoices.void(february.id)
    reissued = invoices.reissue(february.id)
    assert reissued.id != february.id and reissued.replaces == february.id
    assert ("adjustment", "api_calls", Decimal("5.00")) in amounts(reissued.to_json())


def test_lifecycle_draft_finalized_paid_void_and_reissue() -> None:
    customer("life", "small", starts_at=utc(2025, 12, 1))
    draft = invoices.generate("life", JANUARY)
    with pytest.raises(Conflict):
        invoices.mark_paid(draft.id)
    final = invoices.finalize(draft.id)
    assert (final.status, final.number) == ("finalized", 1)
    assert invoices.finalize(draft.id) == final  # finalizing twice takes no second number
    voided = invoices.void(final.id)
    assert (voided.status, voided.number) == ("void", 1)  # it keeps its number
    with pytest.raises(Conflict):
        invoices.finalize(voided.id)
    new = invoices.generate("life", JANUARY)
    assert new.id != final.id and new.status == "draft" and new.replaces == final.id
    assert invoices.reissue(final.id).id == new.id  # already reissued: the live one
    with pytest.raises(Conflict, match="only a void invoice"):
        invoices.reissue(new.id)
    paid = invoices.mark_paid(invoices.finalize(new.id).id)
    assert (paid.status, paid.number) == ("paid", 2)
    assert paid.paid_at is not None
    with pytest.raises(Conflict, match="cannot become void"):
        invoices.void(paid.id)
    assert [i.status for i in invoices.list_invoices(customer_id="life")] == ["void", "paid"]


def test_numbers_are_gapless_under_concurrent_finalization_and_rollback(
    db: psycopg.Connection, test_servers: SessionServers
) -> None:
    ids = []
    for n in range(24):
        customer(f"num{n}", "small", starts_at=utc(2025, 12, 1))
        ids.append(invoices.generate(f"num{n}", JANUARY).id)
    with psycopg.connect(test_servers.database_url, options="-c TimeZone=UTC") as conn:
        taken = invoices.finalize(ids[0], conn=conn)
        assert taken.number == 1
        conn.rollback()  # the number goes back with the status change
    errors: list[BaseException] = []

    def finalize_all(seed: int) -> None:
        order = ids[:]
        random.Random(seed).shuffle(order)
        try:
            for invoice_id in order:
                invoices.finalize(invoice_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finalize_all, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(n for (n,) in db.execute("SELECT number FROM invoices").fetchall())
    assert numbers == list(range(1, 25))
    (last,) = db.execute("SELECT last_number FROM invoice_numbers").fetchone()
    assert last == 24


def test_finalize_due_numbers_in_period_order() -> None:
    customer("b", "small", starts_at=utc(2025, 12, 1))
    customer("a", "small", starts_at=utc(2025, 12, 1))
    for customer_id in ("b", "a"):
        invoices.generate(customer_id, utc(2026, 2, 1))
        invoices.generate(customer_id, JANUARY)
    finalized = invoices.finalize_due(now=utc(2026, 3, 1, 2))
    order = [(i.period_label, i.customer_id, i.number) for i in finalized]
    assert order == [
        ("2026-01", "a", 1),
        ("2026-01", "b", 2),
        ("2026-02", "a", 3),
        ("2026-02", "b", 4),
    ]
    assert invoices.finalize_due(now=utc(2026, 3, 1, 2) + timedelta(days=1)) == []
