"""Changes of a subscription history: a plan change in the past re-rates, a currency changes
only at a period boundary, a subscription ends and starts again.

Through the public commands (`meter customers ...`, `meter periods close --wait` with a
Dramatiq worker, `meter invoices ...`); usage goes in through the ingest path with its arrival
time given. Every date is fixed relative to period boundaries; where a command reads the clock
(the backdating horizon), the horizon is set wide enough that the day the suite runs on does
not matter, and the horizon itself is tested with `now` given.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import typer
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from typer.testing import CliRunner

from cli import customers as customers_cli
from cli import invoices as invoices_cli
from cli import periods as periods_cli
from pricing.plans import load_plan
from services import invoice_lifecycle as invoices
from services import periods
from services.customers import cancel, change_plan, get_customer, status, subscriptions
from services.ingest import ingest_batch
from services.reconcile import ledger_mismatches
from services.usage import segment_counters
from storage import db
from storage.catalog.cache import catalog, load_contexts
from storage.catalog.plans import apply_plan
from storage.errors import Conflict, InvalidInput
from storage.invoices import jobs as invoice_jobs
from storage.ledger import locks as ingest_locks
from storage.settings import reset_settings
from storage.usage import counters, rollups
from tests.billing.helpers import amounts, event, ingest, utc

runner = CliRunner()

PLANS = {
    "plan_a": ("USD", "100.00", "0.10"),
    "plan_b": ("USD", "200.00", "0.05"),
    "plan_e": ("EUR", "100.00", "0.10"),
}
SEPTEMBER, OCTOBER, NOVEMBER, DECEMBER = (utc(2026, m, 1) for m in (9, 10, 11, 12))


@pytest.fixture
def history_plans(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Three plans (api_calls priced per unit, no tax), and a backdating horizon wide enough
    for the commands, which read the clock, to accept these dates on any day."""
    for code, (currency, base_fee, unit) in PLANS.items():
        apply_plan(
            load_plan(
                {
                    "code": code,
                    "name": code,
                    "currency": currency,
                    "base_fee": base_fee,
                    "metrics": {"api_calls": {"aggregation": "sum"}},
                    "charges": [{"metric": "api_calls", "model": "standard", "unit_amount": unit}],
                }
            )
        )
    monkeypatch.setenv("METER_BACKDATE_MAX_DAYS", "100000")
    reset_settings()
    yield
    monkeypatch.delenv("METER_BACKDATE_MAX_DAYS")
    reset_settings()


pytestmark = pytest.mark.usefixtures("history_plans")


def run(app: typer.Typer, *args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result.stdout


def refused(app: typer.Typer, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0 and result.exception is not None
    return str(result.exception)


def close_with_worker(broker: StubBroker, label: str) -> None:
    """`meter periods close --period LABEL --wait` while a Dramatiq worker runs the jobs."""
    worker = Worker(broker, worker_timeout=20, worker_threads=1)
    worker.start()
    try:
        run(periods_cli.app, "close", "--period", label, "--wait", "--timeout", "60")
    finally:
        worker.stop()


def invoice_of(customer_id: str, label: str) -> dict[str, Any]:
    (found,) = [
        i
        for i in run(invoices_cli.app, "list", "--customer", customer_id, "--json")
        if i["period"] == label and i["status"] != "void"
    ]
    return dict(run(invoices_cli.app, "show", found["id"], "--json"))


def lines(document: dict[str, Any]) -> list[tuple[str, str | None, Decimal]]:
    return amounts(document)


# --- a plan change in the past ------------------------------------------------------------


def _customer_on_a_since_september(stub_broker: StubBroker | None) -> None:
    """On plan A from 1 September, with usage in each month; the periods closed through a
    worker unless `stub_broker` is None."""
    run(customers_cli.app, "create", "bk", "--plan", "plan_a", "--starts-at", SEPTEMBER.isoformat())
    ingest([event("bk", utc(2026, 9, 10), quantity=100)])
    ingest([event("bk", utc(2026, 9, 20), quantity=200)])
    ingest([event("bk", utc(2026, 10, 5), quantity=300)])
    ingest([event("bk", utc(2026, 11, 10), quantity=400)])
    if stub_broker is None:
        return
    for label in ("2026-09", "2026-10", "2026-11"):
        close_with_worker(stub_broker, label)
    assert invoice_of("bk", "2026-09")["subtotal"] == "130.00"  # 100 + 300 × 0.10


#: September re-rated under the new history: plan A for 15 of 30 days with 100 calls, plan B
#: for the other 15 with the 200 calls of 20 September.
SEPTEMBER_RERATED = [
    ("base_fee", None, Decimal("50.00")),  # 15/30 × 100
    ("usage", "api_calls", Decimal("10.00")),  # 100 × 0.10
    ("base_fee", None, Decimal("100.00")),  # 15/30 × 200
    ("usage", "api_calls", Decimal("10.00")),  # 200 × 0.05
]
#: What the finalized September invoice gets on the next one: new minus billed, line by line.
SEPTEMBER_ADJUSTMENTS = [
    ("adjustment", None, Decimal("-50.00")),  # base fee under A: 50 instead of 100
    ("adjustment", "api_calls", Decimal("-20.00")),  # A's usage: 100 calls, not 300
    ("adjustment", None, Decimal("100.00")),  # base fee under B, from 16 September
    ("adjustment", "api_calls", Decimal("10.00")),  # B's usage: the 200 calls of 20 September
]
OCTOBER_UNDER_B = [("base_fee", None, Decimal("200.00")), ("usage", "api_calls", Decimal("15.00"))]
NOVEMBER_UNDER_B = [("base_fee", None, Decimal("200.00")), ("usage", "api_calls", Decimal("20.00"))]


@pytest.mark.parametrize("september", ["draft", "finalized", "void"])
def test_a_plan_change_in_the_past_re_rates_every_period_since(
    stub_broker: StubBroker, september: str
) -> None:
    _customer_on_a_since_september(stub_broker)
    first = invoice_of("bk", "2026-09")
    if september in ("finalized", "void"):
        run(invoices_cli.app, "finalize", first["id"], "--json")
    if september == "void":
        run(invoices_cli.app, "void", first["id"], "--json")

    run(customers_cli.app, "change-plan", "bk", "--plan", "plan_b", "--at", "2026-09-16T00:00:00Z")

    october, november = invoice_of("bk", "2026-10"), invoice_of("bk", "2026-11")
    assert lines(november) == NOVEMBER_UNDER_B and november["subtotal"] == "220.00"
    if september == "draft":  # the open draft is recomputed in place
        recomputed = invoice_of("bk", "2026-09")
        assert recomputed["id"] == first["id"] and recomputed["status"] == "draft"
        assert lines(recomputed) == SEPTEMBER_RERATED and recomputed["subtotal"] == "170.00"
        assert lines(october) == OCTOBER_UNDER_B and october["subtotal"] == "215.00"
    elif september == "finalized":  # never changed: October carries the difference
        assert run(invoices_cli.app, "show", first["id"], "--json")["subtotal"] == "130.00"
        assert lines(october) == OCTOBER_UNDER_B + SEPTEMBER_ADJUSTMENTS
        assert october["subtotal"] == "255.00"  # 215 + 40
        adjustment = october["lines"][2]
        assert adjustment["for_period"] == "2026-09" and adjustment["adjusts"] == "base_fee"
        assert october["lines"][3]["description"] == (
            "Adjustment for 2026-09: usage of api_calls, re-rated after a change of plan history"
        )
        assert october["lines"][3]["quantity"] == "-200"
    else:  # a void invoice bills nothing: its reissue is rated under the history as it is now
        assert lines(october) == OCTOBER_UNDER_B
        reissued = run(invoices_cli.app, "reissue", first["id"], "--json")
        assert reissued["replaces"] == first["id"]
        assert lines(invoice_of("bk", "2026-09")) == SEPTEMBER_RERATED
    # Finalizing October and generating again bills September's difference only once.
    if september == "finalized":
        run(invoices_cli.app, "finalize", october["id"], "--json")
        assert invoices.generate("bk", NOVEMBER).to_json()["subtotal"] == "220.00"


def test_usage_already_ingested_moves_to_the_new_plan_in_rollups_and_counters() -> None:
    _customer_on_a_since_september(None)
    moved = utc(2026, 9, 16)
    before = rollups.snapshot("bk", SEPTEMBER)
    # Live counters of September (kept as if the segment were recent: counters of old
    # segments expire, whatever day the suite runs on).
    far = utc(2100, 1, 1)
    counters.load_segment("bk", SEPTEMBER, far, before.version, before.state, before.uniques)
    assert counters.read_segment("bk", SEPTEMBER, []) is not None
    change_plan("bk", "plan_b", moved, now=utc(2026, 10, 20))
    old, new = rollups.snapshot("bk", SEPTEMBER), rollups.snapshot("bk", moved)
    assert old.state.metrics["api_calls"].total == 100 and old.version > before.version
    assert new.state.metrics["api_calls"].total == 200
    assert rollups.snapshot("bk", OCTOBER).state.metrics["api_calls"].total == 300
    # The counters were reloaded from the new rollups (or dropped): the old hash is never read.
    live = counters.read_segment("bk", SEPTEMBER, [])
    assert live is None or (live.version, live.state) == (old.version, old.state)
    context = load_contexts(["bk"])["bk"]
    period = invoices.period_of(context, SEPTEMBER)
    for segment, snap in zip(catalog.segments(context, period), (old, new), strict=True):
        version, state, _ = segment_counters("bk", segment)
        assert (version, state) == (snap.version, snap.state)
    # The ledger still agrees with the rollups, segment by segment.
    segments = [("bk", s) for s in catalog.segments(context, period)]
    assert [s.start for _, s in segments] == [SEPTEMBER, moved]
    assert ledger_mismatches(segments) == []
    # Usage sent after the change lands in the new plan's segment.
    ingest([event("bk", utc(2026, 9, 25), quantity=10)], now=utc(2026, 10, 20))
    assert rollups.snapshot("bk", moved).state.metrics["api_calls"].total == 210


def test_a_change_after_the_last_usage_keeps_the_rollups_and_moves_versions_and_ends() -> None:
    run(customers_cli.app, "create", "fw", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    ingest([event("fw", utc(2026, 11, 5), quantity=100)])
    before = rollups.snapshot("fw", NOVEMBER)
    change_plan("fw", "plan_b", utc(2026, 11, 20), now=utc(2026, 11, 20))
    after = rollups.snapshot("fw", NOVEMBER)
    assert after.state == before.state and after.version > before.version
    with db.connection() as conn:
        ends = conn.execute(
            "SELECT DISTINCT period_end FROM usage_rollups WHERE customer_id = 'fw'"
        ).fetchall()
    assert ends == [(utc(2026, 11, 20),)]
    live = counters.read_segment("fw", NOVEMBER, [])
    assert live is None or (live.version, live.state) == (after.version, after.state)
    ingest([event("fw", utc(2026, 11, 25), quantity=100)])
    document = invoices.generate("fw", NOVEMBER, now=utc(2026, 12, 1, 1)).to_json()
    assert lines(document) == [
        ("base_fee", None, Decimal("63.33")),  # 19/30 × 100
        ("usage", "api_calls", Decimal("10.00")),  # 100 × 0.10 before the change
        ("base_fee", None, Decimal("73.33")),  # 11/30 × 200
        ("usage", "api_calls", Decimal("5.00")),  # 100 × 0.05 after it
    ]


def test_a_change_further_back_than_the_horizon_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("METER_BACKDATE_MAX_DAYS")
    reset_settings()  # the default: the accepted window, 35 days
    run(customers_cli.app, "create", "far", "--plan", "plan_a", "--starts-at", "2026-09-01T00:00Z")
    with pytest.raises(InvalidInput, match=r"^at: .* more than 35 days before now"):
        change_plan("far", "plan_b", utc(2026, 9, 16), now=utc(2026, 10, 22))
    assert [s.plan_code for s in subscriptions("far")] == ["plan_a"]
    change_plan("far", "plan_b", utc(2026, 9, 16), now=utc(2026, 10, 21))  # 35 days: accepted
    monkeypatch.setenv("METER_BACKDATE_MAX_DAYS", "0")
    reset_settings()
    with pytest.raises(InvalidInput, match="METER_BACKDATE_MAX_DAYS"):
        change_plan("far", "plan_a", utc(2026, 10, 20), now=utc(2026, 10, 21))


def test_a_change_is_refused_when_the_new_plan_cannot_price_usage_already_counted() -> None:
    apply_plan(
        load_plan(
            {
                "code": "plan_s",
                "name": "Storage only",
                "currency": "USD",
                "metrics": {"storage_gb": {"aggregation": "max"}},
                "charges": [{"metric": "storage_gb", "model": "standard", "unit_amount": "1"}],
            }
        )
    )
    run(customers_cli.app, "create", "nope", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    ingest([event("nope", utc(2026, 11, 20), quantity=5)])
    message = refused(
        customers_cli.app, "change-plan", "nope", "--plan", "plan_s", "--at", "2026-11-15T00:00Z"
    )
    assert message.startswith("at: 1 usage event(s)") and "api_calls" in message
    assert [s.plan_code for s in subscriptions("nope")] == ["plan_a"]
    assert rollups.snapshot("nope", NOVEMBER).state.metrics["api_calls"].total == 5


# --- a change of currency -----------------------------------------------------------------


def test_a_currency_change_takes_effect_only_at_a_period_boundary(stub_broker: StubBroker) -> None:
    run(
        customers_cli.app,
        "create",
        "fx",
        "--plan",
        "plan_a",
        "--timezone",
        "Europe/Paris",
        "--starts-at",
        "2026-11-01T00:00:00+01:00",
    )
    message = refused(
        customers_cli.app, "change-plan", "fx", "--plan", "plan_e", "--at", "2026-11-15T00:00Z"
    )
    assert message.startswith("at: ") and "USD and EUR" in message
    assert "2026-11-30T23:00:00+00:00" in message  # the next boundary: 1 December in Paris
    assert [s.plan_code for s in subscriptions("fx")] == ["plan_a"]
    # Midnight UTC is not midnight in Paris: still mid-period.
    assert "period boundary" in refused(
        customers_cli.app, "change-plan", "fx", "--plan", "plan_e", "--at", "2026-12-01T00:00Z"
    )
    run(
        customers_cli.app,
        "change-plan",
        "fx",
        "--plan",
        "plan_e",
        "--at",
        "2026-12-01T00:00:00+01:00",
    )
    ingest([event("fx", utc(2026, 11, 20), quantity=10)])
    close_with_worker(stub_broker, "2026-11")
    november = invoice_of("fx", "2026-11")
    assert (november["currency"], november["subtotal"]) == ("USD", "101.00")
    assert invoice_jobs.failed_jobs() == []
    # A change in the same currency mid-period is fine, as before.
    run(customers_cli.app, "create", "fx2", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    run(customers_cli.app, "change-plan", "fx2", "--plan", "plan_b", "--at", "2026-11-15T00:00Z")


# --- ending a subscription, and starting again ---------------------------------------------


def test_cancel_now_prorates_the_base_fee_and_rejects_later_usage(stub_broker: StubBroker) -> None:
    run(customers_cli.app, "create", "bye", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    ingest([event("bye", utc(2026, 11, 10), quantity=100)])
    ended = cancel("bye", now=utc(2026, 11, 21))  # immediately: at `now`
    assert ended.ends_at == utc(2026, 11, 21)
    late = ingest_batch(
        "after-end", [event("bye", utc(2026, 11, 25), quantity=7)], now=utc(2026, 11, 25, 1)
    )
    assert (late.accepted, late.rejected) == (0, {"no_subscription": 1})
    close_with_worker(stub_broker, "2026-11")
    november = invoice_of("bye", "2026-11")
    assert lines(november) == [
        ("base_fee", None, Decimal("66.67")),  # 20/30 × 100: 1–20 November
        ("usage", "api_calls", Decimal("10.00")),
    ]
    assert november["lines"][0]["proration"] == {"days": 20, "period_days": 30}
    # The periods after the end are never due: the scheduler's close does not loop on them.
    due = periods.due_keys(utc(2027, 6, 1))
    assert [(k.customer_id, k.period_label) for k in due] == []  # November has its job
    assert periods.keys_for_label("2026-12", utc(2027, 1, 2)) == []
    shown = run(customers_cli.app, "show", "bye", "--json")
    assert shown["status"] == "cancelled" and shown["ends_at"] == "2026-11-21T00:00:00+00:00"
    with pytest.raises(Conflict, match="change-plan starts a new one"):
        cancel("bye", now=utc(2026, 11, 22))


def test_cancel_at_period_end_uses_the_local_end_of_the_period(stub_broker: StubBroker) -> None:
    run(
        customers_cli.app,
        "create",
        "eop",
        "--plan",
        "plan_a",
        "--timezone",
        "Europe/Paris",
        "--starts-at",
        "2026-11-01T00:00:00+01:00",
    )
    ending = cancel("eop", at_period_end=True, now=utc(2026, 11, 10))
    assert ending.ends_at == utc(2026, 11, 30, 23)  # 1 December, midnight in Paris
    listed = {c["id"]: c for c in run(customers_cli.app, "list", "--json")}
    assert listed["eop"]["status"] == "cancelled"  # the clock has passed 1 December 2026
    ingest([event("eop", utc(2026, 11, 30, 22, 59), quantity=20)])
    after = ingest_batch(
        "eop-late", [event("eop", utc(2026, 11, 30, 23), quantity=1)], now=utc(2026, 12, 1)
    )
    assert after.rejected == {"no_subscription": 1}
    close_with_worker(stub_broker, "2026-11")
    november = invoice_of("eop", "2026-11")
    assert lines(november) == [
        ("base_fee", None, Decimal("100.00")),  # the whole period: no proration
        ("usage", "api_calls", Decimal("2.00")),
    ]
    assert "proration" not in november["lines"][0]


def test_the_ending_status_and_the_cancel_command_errors() -> None:
    run(customers_cli.app, "create", "st", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    ending = cancel("st", utc(2026, 11, 20), now=utc(2026, 11, 10))
    assert status(ending, utc(2026, 11, 10)) == "ending"
    assert status(ending, utc(2026, 11, 20)) == "cancelled"
    # An ending subscription may be given another end, but never one before counted usage.
    assert cancel("st", utc(2026, 11, 25), now=utc(2026, 11, 11)).ends_at == utc(2026, 11, 25)
    ingest([event("st", utc(2026, 11, 12), quantity=3)])
    with pytest.raises(InvalidInput, match=r"^at: 1 usage event\(s\) were already accepted"):
        cancel("st", utc(2026, 11, 12), now=utc(2026, 11, 13))
    assert get_customer("st").ends_at == utc(2026, 11, 25)
    assert "--at-period-end" in refused(
        customers_cli.app, "cancel", "st", "--at", "2026-11-20T00:00Z", "--at-period-end"
    )
    assert "UTC offset" in refused(customers_cli.app, "cancel", "st", "--at", "2026-11-20T00:00")
    assert "no customer" in refused(customers_cli.app, "cancel", "ghost")


def test_a_cancelled_customer_is_resubscribed_by_change_plan(stub_broker: StubBroker) -> None:
    run(customers_cli.app, "create", "back", "--plan", "plan_a", "--starts-at", "2026-09-01T00:00Z")
    ingest([event("back", utc(2026, 9, 20), quantity=50)])
    cancel("back", utc(2026, 9, 21), now=utc(2026, 9, 21))
    # Starting again on 6 November: September is billed up to the end, October not at all,
    # November from the 6th.
    run(customers_cli.app, "change-plan", "back", "--plan", "plan_b", "--at", "2026-11-06T00:00Z")
    ingest([event("back", utc(2026, 11, 20), quantity=100)])
    for label in ("2026-09", "2026-10", "2026-11"):
        close_with_worker(stub_broker, label)
    assert lines(invoice_of("back", "2026-09")) == [
        ("base_fee", None, Decimal("66.67")),  # 20/30 × 100
        ("usage", "api_calls", Decimal("5.00")),  # 50 × 0.10
    ]
    labels = [i["period"] for i in run(invoices_cli.app, "list", "--customer", "back", "--json")]
    assert labels == ["2026-09", "2026-11"]
    assert lines(invoice_of("back", "2026-11")) == [
        ("base_fee", None, Decimal("166.67")),  # 25/30 × 200
        ("usage", "api_calls", Decimal("5.00")),  # 100 × 0.05
    ]
    shown = run(customers_cli.app, "show", "back", "--json")
    assert shown["status"] == "active" and shown["ends_at"] is None
    assert [(s["plan"], s["from"], s["to"]) for s in shown["subscriptions"]] == [
        ("plan_a", "2026-09-01T00:00:00+00:00", "2026-09-21T00:00:00+00:00"),
        ("plan_b", "2026-11-06T00:00:00+00:00", None),
    ]
    assert (shown["subscriptions"][1]["plan_version"], shown["subscriptions"][1]["currency"]) == (
        1,
        "USD",
    )
    assert periods.due_keys(utc(2026, 12, 1)) == []  # every ended period has its job


def test_customers_list_filters_by_plan_and_shows_a_table() -> None:
    run(customers_cli.app, "create", "c1", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    run(customers_cli.app, "create", "c2", "--plan", "plan_b", "--starts-at", "2026-11-01T00:00Z")
    run(
        customers_cli.app,
        "create",
        "c3",
        "--plan",
        "plan_a",
        "--timezone",
        "Asia/Tokyo",
        "--anchor-day",
        "15",
        "--starts-at",
        "2026-11-15T00:00:00+09:00",
    )
    everyone = run(customers_cli.app, "list", "--json")
    assert [c["id"] for c in everyone] == ["c1", "c2", "c3"]
    on_a = run(customers_cli.app, "list", "--plan", "plan_a", "--json")
    assert [(c["id"], c["timezone"], c["anchor_day"]) for c in on_a] == [
        ("c1", "UTC", None),
        ("c3", "Asia/Tokyo", 15),
    ]
    assert all(c["status"] == "active" for c in everyone)
    table = run(customers_cli.app, "list")
    assert "c3" in table and "Asia/Tokyo" in table
    assert "calendar months" in run(customers_cli.app, "show", "c1")
    assert "no customer" in refused(customers_cli.app, "show", "ghost")


def test_history_changes_and_ingest_of_one_customer_serialize() -> None:
    """A change waits for a batch in flight (whose events are then in the ledger it re-derives
    from), and a batch classified with a catalog older than a change is classified again."""
    run(customers_cli.app, "create", "race", "--plan", "plan_a", "--starts-at", "2026-11-01T00:00Z")
    ingest([event("race", utc(2026, 11, 2), quantity=1)])
    stale = catalog.customers({"race"})["race"]  # what another worker may still have cached
    done = threading.Event()
    holder = db.pool().getconn()
    try:
        with holder.transaction():
            ingest_locks.revision(ingest_locks.lock_for_ingest(holder, ["race"]))  # in flight
            thread = threading.Thread(
                target=lambda: (
                    change_plan("race", "plan_b", utc(2026, 11, 10), now=utc(2026, 11, 20)),
                    done.set(),
                )
            )
            thread.start()
            _wait_for_an_advisory_lock_wait(holder)
            assert not done.is_set()  # the change waits for the batch's commit
        thread.join(60)
        assert done.is_set()
    finally:
        db.pool().putconn(holder)
    catalog._customers["race"] = (time.monotonic() + 60, stale)  # a worker's stale cache
    ingest([event("race", utc(2026, 11, 15), quantity=40)], now=utc(2026, 11, 20))
    assert rollups.snapshot("race", utc(2026, 11, 10)).state.metrics["api_calls"].total == 40
    assert rollups.snapshot("race", NOVEMBER).state.metrics["api_calls"].total == 1


def _wait_for_an_advisory_lock_wait(conn: Any) -> None:
    """Until some session waits on an advisory lock (the change, behind the batch)."""
    for _ in range(600):
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND wait_event = 'advisory' AND datname = current_database()"
        ).fetchone()
        if row[0]:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the change never waited for the batch")


def test_the_cancel_command_ends_now_or_at_the_end_of_the_current_period() -> None:
    """The command reads the clock: only where the end falls is checked here (the amounts, with
    `now` given, are above)."""
    from datetime import UTC, datetime

    from pricing.periods import billing_period

    start = billing_period(datetime.now(UTC)).start
    for customer_id in ("now1", "eop1"):
        run(customers_cli.app, "create", customer_id, "--plan", "plan_a", "--starts-at", str(start))
    before = datetime.now(UTC)
    ended = run(customers_cli.app, "cancel", "now1", "--json")
    after = datetime.now(UTC)
    assert ended["status"] == "cancelled"
    assert before <= datetime.fromisoformat(ended["ends_at"]) <= after
    ending = run(customers_cli.app, "cancel", "eop1", "--at-period-end", "--json")
    ends = {billing_period(before).end, billing_period(datetime.now(UTC)).end}
    assert datetime.fromisoformat(ending["ends_at"]) in ends and ending["status"] == "ending"
    assert "ends" in run(customers_cli.app, "cancel", "eop1")  # another end may be given
