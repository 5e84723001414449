"""Price backtesting on the known invoices of tests/analytics/scenario.py: the same plan gives
back what was invoiced, another plan a difference computed by hand, and nothing is written."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import redis as redis_lib

from pricing.errors import UserError
from pricing.plans import load_plan
from services.backtest import backtest
from storage.catalog.cache import catalog
from tests.analytics.scenario import EURO, LATER
from tests.billing.helpers import BIG, SMALL

pytestmark = pytest.mark.usefixtures("scenario")

TABLES = (
    "invoices",
    "invoice_lines",
    "invoice_numbers",
    "invoice_jobs",
    "usage_rollups",
    "usage_rollup_uniques",
    "usage_periods",
    "usage_daily",
    "plans",
    "customers",
    "subscriptions",
    "alerts",
    "outbox",
)


def _rows(document: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    return {
        r["customer_id"]: (r["status"], r["billed"], r["backtest"], r["difference"])
        for r in document["rows"]
    }


def test_the_same_plan_gives_back_each_invoice_without_its_adjustments() -> None:
    document = backtest(load_plan(SMALL), "2026-02", now=LATER)
    # a's February invoice is 210.00 with a 10.00 adjustment for January: 200.00 is February's.
    assert _rows(document) == {
        "a": ("finalized", "200.00", "200.00", "0.00"),
        "b": ("finalized", "100.00", "100.00", "0.00"),  # the reissued invoice, not the void one
        "n": ("finalized", "100.00", "100.00", "0.00"),
        "d": ("draft", "100.00", "100.00", "0.00"),
    }
    assert document["totals"] == [
        {
            "currency": "USD",
            "customers": 4,
            "billed": "500.00",
            "backtest": "500.00",
            "difference": "0.00",
        }
    ]
    assert document["skipped"] == [
        {"customer_id": "e", "reason": "billed in EUR, plan 'small' is in USD"}
    ]


def test_another_plan_gives_the_hand_computed_difference() -> None:
    # big: base 200, 1,000 calls free then 0.05. a: 200 + 100 × 0.05 = 205; b, n, d: 200.
    document = backtest(load_plan(BIG), "2026-02", now=LATER)
    assert _rows(document) == {
        "a": ("finalized", "200.00", "205.00", "5.00"),
        "b": ("finalized", "100.00", "200.00", "100.00"),
        "n": ("finalized", "100.00", "200.00", "100.00"),
        "d": ("draft", "100.00", "200.00", "100.00"),
    }
    assert document["totals"][0]["difference"] == "305.00"
    row = next(r for r in document["rows"] if r["customer_id"] == "a")
    assert (row["backtest_tax"], row["backtest_total"]) == ("20.50", "225.50")


def test_a_period_with_late_usage_shows_it_against_the_final_invoice() -> None:
    # a's January invoice billed 300 calls (120.00); the rollups now hold 400: 130.00.
    document = backtest(load_plan(SMALL), "2026-01", now=LATER, customer_ids=["a", "c"])
    assert _rows(document) == {
        "a": ("finalized", "120.00", "130.00", "10.00"),
        "c": ("finalized", "100.00", "100.00", "0.00"),
    }


def test_a_plan_in_another_currency_reprices_its_own_customers() -> None:
    cheaper = EURO.replace('"20.00"', '"10.00"').replace("code: euro", "code: euro-lite")
    document = backtest(load_plan(cheaper), "2026-01", now=LATER)
    assert _rows(document) == {"e": ("finalized", "60.00", "50.00", "-10.00")}
    assert {s["customer_id"] for s in document["skipped"]} == {"a", "b", "c"}


def _snapshot(db: psycopg.Connection[Any], redis: redis_lib.Redis) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for table in TABLES:
        row = db.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"  # noqa: S608 (constant SQL text; values are parameters)
            f" FROM {table} t"
        ).fetchone()
        found[table] = row
    found["redis"] = sorted((key, redis.type(key)) for key in redis.scan_iter())
    return found


def test_a_backtest_writes_nothing(db: psycopg.Connection[Any], redis: redis_lib.Redis) -> None:
    trial = SMALL.replace("code: small", "code: trial").replace('"100.00"', '"80.00"')
    before = _snapshot(db, redis)
    catalog.clear()
    document = backtest(load_plan(trial), "2026-02", now=LATER)
    assert document["totals"][0]["difference"] == "-80.00"  # 4 customers × 20 less base fee
    assert _snapshot(db, redis) == before
    assert db.execute("SELECT count(*) FROM plans WHERE code = 'trial'").fetchone() == (0,)


def test_what_the_rollups_cannot_answer_is_refused_with_the_field() -> None:
    other_events = SMALL.replace(
        "api_calls:  {aggregation: sum}", "api_calls:  {aggregation: sum, field: bytes}"
    ).replace("code: small", "code: bytes")
    with pytest.raises(UserError, match=r"^metrics.api_calls: reads other events than plan"):
        backtest(load_plan(other_events), "2026-02", now=LATER)
    yearly = SMALL.replace("code: small", "code: yearly\ninterval: year")
    with pytest.raises(UserError, match=r"^--plan: plan 'yearly' bills by the year"):
        backtest(load_plan(yearly), "2026-02", now=LATER)
    with pytest.raises(UserError, match=r"^--customer: no customer 'zed'"):
        backtest(load_plan(SMALL), "2026-02", now=LATER, customer_ids=["zed"])
