"""A gauge's level carries across a plan change within a period: `weighted_sum`, `latest` and
`max` (the peak of the level), in the invoice (from the rollups) and in the live estimate (from
the Redis counters) alike, through the `meter` commands and a real Dramatiq worker.

Every amount is worked out by hand in the comments. A `weighted_sum` weighs a level by the time
it is held (so a DST day counts its real 23 or 25 hours); base fees prorate by local days.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from typer.testing import CliRunner

from cli.main import app
from storage.settings import get_settings
from tasks import configure_recorder
from tasks.broker import INGEST_QUEUE
from tasks.ingest import ingest_events, ingest_failed
from tests.billing.helpers import utc

pytestmark = pytest.mark.usefixtures("clean_state")

runner = CliRunner()

GAUGE = """
code: {code}
name: Gauge {code}
currency: USD
base_fee: "{base_fee}"
metrics:
{metrics}
charges:
{charges}
"""

LEVELS = {
    "gb": "{aggregation: weighted_sum}",
    "disk": "{aggregation: latest, event: storage}",
    "peak": "{aggregation: max, event: storage}",
}

#: The oldest event any test here sends: the ingest window is opened to reach it whatever the
#: day the suite runs (the window is not what these tests are about).
OLDEST = utc(2026, 3, 1)


def meter(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result.stdout


class Commands:
    """The `meter` commands, and a real Dramatiq worker (the fixture's) that consumes what
    they queue."""

    def __init__(self, broker: StubBroker, plans_dir: Path) -> None:
        self.broker = broker
        self.plans_dir = plans_dir
        self._ids = 0

    def plan(self, code: str, base_fee: str = "0", metrics: dict[str, str] = LEVELS) -> None:
        """A plan billing each metric at 1.00 a unit."""
        path = self.plans_dir / f"{code}.yaml"
        path.write_text(
            GAUGE.format(
                code=code,
                base_fee=base_fee,
                metrics="\n".join(f"  {name}: {metric}" for name, metric in metrics.items()),
                charges="\n".join(
                    f'  - {{metric: {name}, model: standard, unit_amount: "1.00"}}'
                    for name in metrics
                ),
            )
        )
        meter("plans", "apply", str(path))

    def send(self, customer: str, metric: str, quantity: str, at: datetime) -> None:
        self._ids += 1
        meter("events", "send", "--customer", customer, "--metric", metric,
              "--quantity", quantity, "--timestamp", at.isoformat(),
              "--id", f"{customer}-{self._ids}")  # fmt: skip

    def work(self) -> None:
        """Let the worker ingest every queued batch (and run the invoice refreshes that late
        usage asks for)."""
        self.broker.join(INGEST_QUEUE, fail_fast=True, timeout=60_000)
        self.broker.join("billing", fail_fast=True, timeout=60_000)
        assert meter("ops", "stats", "--json")["events"]["rejected"] == {}

    def usage(self, customer: str, at: datetime) -> dict[str, Any]:
        document: dict[str, Any] = meter("usage", customer, "--at", at.isoformat(), "--json")
        return document

    def invoice(self, customer: str, period: str) -> dict[str, Any]:
        meter("periods", "close", "--period", period, "--inline", "--json")
        listed = meter("invoices", "list", "--customer", customer, "--period", period, "--json")
        assert len(listed) == 1
        document: dict[str, Any] = meter("invoices", "show", listed[0]["id"], "--json")
        return document


@pytest.fixture
def commands(
    stub_broker: StubBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Commands]:
    for actor in (ingest_events, ingest_failed):
        monkeypatch.setattr(actor, "broker", stub_broker)
        stub_broker.declare_actor(actor)
    past_days = (datetime.now(UTC) - OLDEST).days + 2
    monkeypatch.setattr(get_settings(), "METER_ACCEPT_PAST_DAYS", past_days)
    configure_recorder(broker=stub_broker, flush_interval=0.01)
    worker = Worker(stub_broker, worker_timeout=20, worker_threads=1)
    worker.start()
    try:
        yield Commands(stub_broker, tmp_path)
    finally:
        worker.stop()
        configure_recorder()


def lines(document: dict[str, Any]) -> list[tuple[str, str | None, str | None, Decimal]]:
    """(plan, kind, metric, amount) of each invoice line."""
    return [
        (line.get("plan"), line["kind"], line.get("metric"), Decimal(line["amount"]))
        for line in document["lines"]
    ]


def used(report: dict[str, Any]) -> dict[str, Decimal]:
    return {name: Decimal(m["used"]) for name, m in report["metrics"].items()}


def costs(report: dict[str, Any]) -> dict[str, Decimal]:
    return {name: Decimal(m["estimated_cost"]) for name, m in report["metrics"].items()}


def test_a_gauge_keeps_its_level_across_a_mid_period_plan_change(commands: Commands) -> None:
    commands.plan("a", base_fee="30.00")
    commands.plan("b", base_fee="60.00")
    meter("customers", "create", "acme", "--plan", "a", "--starts-at", "2026-11-01T00:00:00Z")
    meter("customers", "change-plan", "acme", "--plan", "b", "--at", "2026-11-15T00:00:00Z")
    commands.send("acme", "gb", "10", utc(2026, 11, 1))  # 10 GB held from 1 November
    commands.send("acme", "storage", "12", utc(2026, 11, 3))  # readings under plan a
    commands.send("acme", "storage", "7", utc(2026, 11, 10))
    commands.work()

    # Live, under plan b on 17 November: 10 GB for 16 of 30 days = 5.333…; the disk reads 7
    # (the last reading, taken under plan a), and the peak of the level under b so far is 7.
    report = commands.usage("acme", utc(2026, 11, 17))
    assert report["plan"] == "b"
    assert used(report) == {"gb": Decimal(16) / 3, "disk": Decimal(7), "peak": Decimal(7)}
    assert costs(report) == {
        "gb": Decimal("5.33"),
        "disk": Decimal("7.00"),
        "peak": Decimal("7.00"),
    }
    # b's base fee 16/30 × 60 = 32.00; usage 5.33 + 7 + 7
    assert report["estimated_total"] == "51.33"

    commands.send("acme", "storage", "5", utc(2026, 11, 20))  # a reading under plan b
    commands.work()
    report = commands.usage("acme", utc(2026, 11, 25))
    assert used(report) == {"gb": Decimal(16) / 3, "disk": Decimal(5), "peak": Decimal(7)}

    invoice = commands.invoice("acme", "2026-11")
    assert lines(invoice) == [
        ("a", "base_fee", None, Decimal("14.00")),  # 14/30 × 30
        ("a", "usage", "gb", Decimal("4.67")),  # 10 GB × 14/30
        ("a", "usage", "disk", Decimal("7.00")),  # last reading under a
        ("a", "usage", "peak", Decimal("12.00")),  # peak under a
        ("b", "base_fee", None, Decimal("32.00")),  # 16/30 × 60
        ("b", "usage", "gb", Decimal("5.33")),  # 10 GB × 16/30: 4.67 + 5.33 = 10.00
        ("b", "usage", "disk", Decimal("5.00")),  # b's own last reading
        ("b", "usage", "peak", Decimal("7.00")),  # the level carried in, above b's reading 5
    ]
    assert invoice["total"] == "87.00"
    # The live estimate of the segment agrees with its invoice lines.
    assert costs(report) == {
        "gb": Decimal("5.33"),
        "disk": Decimal("5.00"),
        "peak": Decimal("7.00"),
    }
    assert [Decimal(s["usage"]["gb"]) for s in invoice["segments"]] == [
        Decimal(14) / 3,
        Decimal(16) / 3,
    ]


def test_a_late_event_before_the_change_moves_the_level_after_it(commands: Commands) -> None:
    commands.plan("a")
    commands.plan("b")
    meter("customers", "create", "late", "--plan", "a", "--starts-at", "2026-11-01T00:00:00Z")
    meter("customers", "change-plan", "late", "--plan", "b", "--at", "2026-11-15T00:00:00Z")
    commands.send("late", "gb", "10", utc(2026, 11, 1))
    commands.send("late", "storage", "12", utc(2026, 11, 3))
    commands.send("late", "storage", "7", utc(2026, 11, 10))
    commands.send("late", "storage", "5", utc(2026, 11, 20))
    commands.work()
    before = commands.invoice("late", "2026-11")
    assert before["status"] == "draft"
    assert [amount for *_, amount in lines(before)] == [
        *(Decimal("0.00"), Decimal("4.67"), Decimal("7.00"), Decimal("12.00")),
        *(Decimal("0.00"), Decimal("5.33"), Decimal("5.00"), Decimal("7.00")),
    ]

    # Late, in plan a's segment: 2 GB more from 8 November, a reading of 9 on 12 November.
    commands.send("late", "gb", "2", utc(2026, 11, 8))
    commands.send("late", "storage", "9", utc(2026, 11, 12))
    commands.work()  # the ingest worker asks for the draft to be recomputed; the worker does

    listed = meter("invoices", "list", "--customer", "late", "--period", "2026-11", "--json")
    after = meter("invoices", "show", listed[0]["id"], "--json")
    assert after["id"] == before["id"] and after["status"] == "draft"
    assert lines(after) == [
        ("a", "base_fee", None, Decimal("0.00")),
        ("a", "usage", "gb", Decimal("5.13")),  # (10 × 14 + 2 × 7) / 30 = 5.133…
        ("a", "usage", "disk", Decimal("9.00")),  # the late reading is a's last
        ("a", "usage", "peak", Decimal("12.00")),
        ("b", "base_fee", None, Decimal("0.00")),
        ("b", "usage", "gb", Decimal("6.40")),  # the level is now 12: 12 × 16/30
        ("b", "usage", "disk", Decimal("5.00")),
        ("b", "usage", "peak", Decimal("9.00")),  # carried level 9, above b's reading 5
    ]
    report = commands.usage("late", utc(2026, 11, 25))
    assert costs(report) == {
        "gb": Decimal("6.40"),
        "disk": Decimal("5.00"),
        "peak": Decimal("9.00"),
    }


def test_late_usage_after_the_invoice_is_final_adjusts_both_plans(commands: Commands) -> None:
    commands.plan("a")
    commands.plan("b")
    meter("customers", "create", "fin", "--plan", "a", "--starts-at", "2026-10-01T00:00:00Z")
    meter("customers", "change-plan", "fin", "--plan", "b", "--at", "2026-10-15T00:00:00Z")
    commands.send("fin", "gb", "10", utc(2026, 10, 1))
    commands.work()
    october = commands.invoice("fin", "2026-10")
    # October has 31 days: a 10 × 14/31 = 4.516…, b 10 × 17/31 = 5.483…
    assert [(plan, metric, amount) for plan, kind, metric, amount in lines(october)] == [
        *(("a", None, Decimal("0.00")), ("a", "gb", Decimal("4.52"))),
        *(("a", "disk", Decimal("0.00")), ("a", "peak", Decimal("0.00"))),
        *(("b", None, Decimal("0.00")), ("b", "gb", Decimal("5.48"))),
        *(("b", "disk", Decimal("0.00")), ("b", "peak", Decimal("0.00"))),
    ]
    meter("invoices", "finalize", october["id"], "--json")

    commands.send("fin", "gb", "2", utc(2026, 10, 8))  # late, under plan a
    commands.work()
    november = commands.invoice("fin", "2026-11")
    adjustments = [
        (line["plan"], line["metric"], line["quantity"], Decimal(line["amount"]))
        for line in november["lines"]
        if line["kind"] == "adjustment"
    ]
    # a: (10 × 14 + 2 × 7)/31 = 4.97 (+0.45); b: the level is now 12, 12 × 17/31 = 6.58 (+1.10)
    assert [(plan, metric, amount) for plan, metric, _, amount in adjustments] == [
        ("a", "gb", Decimal("0.45")),
        ("b", "gb", Decimal("1.10")),
    ]
    assert Decimal(adjustments[1][2]) == Decimal(2) * 17 / 31  # the level moved by 2 GB


def test_a_level_is_matched_by_metric_name_and_aggregation(commands: Commands) -> None:
    commands.plan("a")
    # c bills the same `gb` as a, has no `disk`, and sums the `peak` readings.
    commands.plan("c", metrics={"gb": LEVELS["gb"], "peak": "{aggregation: sum, event: storage}"})
    meter("customers", "create", "mix", "--plan", "a", "--starts-at", "2026-11-01T00:00:00Z")
    meter("customers", "change-plan", "mix", "--plan", "c", "--at", "2026-11-15T00:00:00Z")
    commands.send("mix", "gb", "10", utc(2026, 11, 1))
    commands.send("mix", "storage", "12", utc(2026, 11, 3))
    commands.work()
    report = commands.usage("mix", utc(2026, 11, 20))
    # gb carries (same name, same aggregation); peak is a sum under c: nothing to carry.
    assert used(report) == {"gb": Decimal(16) / 3, "peak": Decimal(0)}
    invoice = commands.invoice("mix", "2026-11")
    assert [(plan, metric, quantity) for plan, _, metric, quantity in lines(invoice)][4:] == [
        ("c", None, Decimal("0.00")),
        ("c", "gb", Decimal("5.33")),
        ("c", "peak", Decimal("0.00")),
    ]


def test_a_berlin_gauge_across_the_dst_change(commands: Commands) -> None:
    commands.plan("a", base_fee="31.00")
    commands.plan("b", base_fee="62.00")
    # March 2026 in Berlin: 1 March 00:00 CET (28 Feb 23:00 UTC) to 1 April 00:00 CEST
    # (31 March 22:00 UTC), 743 hours. The change takes effect at local midnight of 29 March,
    # the day clocks go forward (28 March 23:00 UTC): plan a has 28 days of 24 hours (672 h),
    # plan b the 23-hour 29th, the 30th and the 31st (71 h).
    meter("customers", "create", "berlin", "--plan", "a", "--timezone", "Europe/Berlin",
          "--starts-at", "2026-03-01T00:00:00+01:00")  # fmt: skip
    meter("customers", "change-plan", "berlin", "--plan", "b", "--at", "2026-03-29T00:00:00+01:00")
    commands.send("berlin", "gb", "10", utc(2026, 2, 28, 23))  # from the first local instant
    commands.send("berlin", "storage", "6", utc(2026, 3, 28, 22, 30))  # 23:30 on the 28th, CET
    commands.work()

    # 10 GB: a 10 × 672/743 = 9.0444…, b 10 × 71/743 = 0.9556…; together 10.00.
    report = commands.usage("berlin", utc(2026, 3, 30))
    assert report["plan"] == "b" and report["timezone"] == "Europe/Berlin"
    assert used(report) == {
        "gb": Decimal(710) / Decimal(743),
        "disk": Decimal(6),
        "peak": Decimal(6),
    }
    invoice = commands.invoice("berlin", "2026-03")
    assert invoice["period_start"] == "2026-02-28T23:00:00+00:00"
    assert invoice["period_end"] == "2026-03-31T22:00:00+00:00"
    assert [(s["days"], s["period_days"]) for s in invoice["segments"]] == [(28, 31), (3, 31)]
    assert lines(invoice) == [
        ("a", "base_fee", None, Decimal("28.00")),  # 28/31 × 31 (local days)
        ("a", "usage", "gb", Decimal("9.04")),
        ("a", "usage", "disk", Decimal("6.00")),
        ("a", "usage", "peak", Decimal("6.00")),
        ("b", "base_fee", None, Decimal("6.00")),  # 3/31 × 62
        ("b", "usage", "gb", Decimal("0.96")),  # 9.04 + 0.96 = 10.00
        ("b", "usage", "disk", Decimal("6.00")),  # the reading of 23:30 on the 28th
        ("b", "usage", "peak", Decimal("6.00")),
    ]
    assert costs(report) == {
        "gb": Decimal("0.96"),
        "disk": Decimal("6.00"),
        "peak": Decimal("6.00"),
    }
