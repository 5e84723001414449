"""The reports on a known set of invoices (tests/analytics/scenario.py), every figure computed
by hand there. Dates are fixed: every `now` is given."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from pricing.errors import UserError
from services import analytics
from services import invoice_lifecycle as invoices
from tests.analytics.scenario import LATER, utc

pytestmark = pytest.mark.usefixtures("scenario")


def _revenue(by: str | None = None) -> dict[tuple[str, ...], str]:
    document = analytics.revenue("2026-01", "2026-02", by=by, now=LATER)
    assert document["estimate"] is None  # March is not in the range
    return {
        (r["month"], r["currency"], *([r[by]] if by else [])): r["revenue"]
        for r in document["rows"]
    }


def test_the_scenario_is_invoiced_as_its_table_says() -> None:
    found = {
        (i.customer_id, i.period_label, i.status): i.subtotal for i in invoices.list_invoices()
    }
    assert found == {
        ("a", "2026-01", "finalized"): Decimal("120.00"),
        ("b", "2026-01", "finalized"): Decimal("150.00"),
        ("c", "2026-01", "finalized"): Decimal("100.00"),
        ("e", "2026-01", "finalized"): Decimal("60.00"),
        ("a", "2026-02", "finalized"): Decimal("210.00"),
        ("b", "2026-02", "void"): Decimal("100.00"),
        ("b", "2026-02", "finalized"): Decimal("100.00"),
        ("n", "2026-02", "finalized"): Decimal("100.00"),
        ("d", "2026-02", "draft"): Decimal("100.00"),
        ("e", "2026-02", "finalized"): Decimal("20.00"),
    }


def test_revenue_per_month_and_currency_counts_a_reissued_period_once_and_no_draft() -> None:
    document = analytics.revenue("2026-01", "2026-02", now=LATER)
    rows = {(r["month"], r["currency"]): r for r in document["rows"]}
    # January: a 120 + b 150 + c 100; February: a 210 + b 100 (voided, reissued) + n 100.
    assert {k: r["revenue"] for k, r in rows.items()} == {
        ("2026-01", "USD"): "370.00",
        ("2026-02", "USD"): "410.00",
        ("2026-01", "EUR"): "60.00",
        ("2026-02", "EUR"): "20.00",
    }
    assert rows[("2026-02", "USD")]["invoices"] == 3
    assert rows[("2026-01", "USD")]["tax"] == "37.00"
    assert rows[("2026-01", "USD")]["total"] == "407.00"
    assert document["totals"] == [
        {"currency": "EUR", "revenue": "80.00"},
        {"currency": "USD", "revenue": "780.00"},
    ]


def test_revenue_by_metric_puts_a_late_adjustment_in_the_month_it_is_invoiced() -> None:
    found = _revenue("metric")
    # February USD: base fees a, b, n; api_calls a 100 + the adjustment for January 10.
    assert found[("2026-02", "USD", "base_fee")] == "300.00"
    assert found[("2026-02", "USD", "api_calls")] == "110.00"
    assert found[("2026-01", "USD", "api_calls")] == "70.00"  # a 20 + b 50
    assert found[("2026-01", "EUR", "api_calls")] == "40.00"
    assert found[("2026-02", "USD", "storage_gb")] == "0.00"


def test_revenue_by_plan_and_by_customer() -> None:
    assert _revenue("plan") == {
        ("2026-01", "EUR", "euro"): "60.00",
        ("2026-01", "USD", "small"): "370.00",
        ("2026-02", "EUR", "euro"): "20.00",
        ("2026-02", "USD", "small"): "410.00",
    }
    by_customer = _revenue("customer")
    assert by_customer[("2026-02", "USD", "a")] == "210.00"
    assert by_customer[("2026-02", "USD", "b")] == "100.00"
    assert ("2026-02", "USD", "d") not in by_customer  # a draft
    assert ("2026-02", "USD", "c") not in by_customer  # cancelled


def test_months_without_invoices_are_empty_not_an_error() -> None:
    document = analytics.revenue("2025-06", "2025-11", now=LATER)
    assert document["rows"] == [] and document["totals"] == []
    assert analytics.overage("2025-06", "2025-11")["rows"] == []
    assert analytics.mrr("2025-11", count=3)["rows"] == []


def test_mrr_movements_new_expansion_contraction_churned() -> None:
    document = analytics.mrr("2026-02", count=2, trailing=3)
    rows = {(r["month"], r["currency"]): r for r in document["rows"]}
    january, february = rows[("2026-01", "USD")], rows[("2026-02", "USD")]
    # January: a 100 + 20, b 100 + 50, c 100 → all new.
    assert (january["mrr"], january["new"], january["customers"]) == ("370.00", "370.00", 3)
    # February: a 100 + mean(20, 110) = 165, b 100 + mean(50, 0) = 125, n 100; c gone.
    assert february["mrr"] == "390.00" and february["arr"] == "4680.00"
    assert february["previous_mrr"] == "370.00"
    assert february["new"] == "100.00" and february["new_customers"] == ["n"]
    assert february["expansion"] == "45.00"  # a: 120 → 165
    assert february["contraction"] == "25.00"  # b: 150 → 125
    assert february["churned"] == "100.00" and february["churned_customers"] == ["c"]
    assert february["net"] == "20.00"
    # EUR: e 20 + 40 = 60, then 20 + mean(40, 0) = 40.
    assert rows[("2026-02", "EUR")]["mrr"] == "40.00"
    assert rows[("2026-02", "EUR")]["contraction"] == "20.00"


def test_mrr_with_a_one_month_window_is_the_months_own_revenue() -> None:
    rows = {
        (r["month"], r["currency"]): r["mrr"]
        for r in analytics.mrr("2026-02", count=1, trailing=1)["rows"]
    }
    assert rows == {("2026-02", "EUR"): "20.00", ("2026-02", "USD"): "410.00"}


def test_overage_share_per_metric_and_currency() -> None:
    document = analytics.overage("2026-01", "2026-02")
    rows = {(r["currency"], r["metric"]): r for r in document["rows"]}
    # USD api_calls: a 20 + 100 + 10 (late), b 50 = 180 of 780 → 23.1 %.
    assert rows[("USD", "api_calls")]["overage_revenue"] == "180.00"
    assert rows[("USD", "api_calls")]["share_percent"] == "23.1"
    assert rows[("USD", "storage_gb")]["share_percent"] == "0.0"
    assert rows[("EUR", "api_calls")]["overage_revenue"] == "40.00"
    assert rows[("EUR", "api_calls")]["share_percent"] == "50.0"
    totals = {t["currency"]: t for t in document["totals"]}
    assert totals["USD"]["revenue"] == "780.00" and totals["USD"]["share_percent"] == "23.1"


def test_top_customers_by_revenue_and_by_growth() -> None:
    by_revenue = analytics.top_customers("2026-01", "2026-02", top=2, by="revenue")["rows"]
    assert [(r["currency"], r["customer_id"], r["revenue"]) for r in by_revenue] == [
        ("EUR", "e", "80.00"),
        ("USD", "a", "330.00"),
        ("USD", "b", "250.00"),
    ]
    by_growth = analytics.top_customers("2026-01", "2026-02", top=4, by="growth")["rows"]
    usd = [(r["customer_id"], r["growth"]) for r in by_growth if r["currency"] == "USD"]
    assert usd == [("n", "100.00"), ("a", "90.00"), ("b", "-50.00"), ("c", "-100.00")]


def test_near_limit_reads_live_usage_against_included_allowances() -> None:
    # On February 20: a used 1,100 api_calls of 100 included; b 50 of 100; e 500 of 1,000.
    found = analytics.near_limit(Decimal(80), utc(2, 20))["rows"]
    assert [(r["customer_id"], r["metric"], r["used"], r["included_percent"]) for r in found] == [
        ("a", "api_calls", "1100", "1100.0")
    ]
    at_half = analytics.near_limit(Decimal(50), utc(2, 20))["rows"]
    assert [(r["customer_id"], r["included_percent"]) for r in at_half] == [
        ("a", "1100.0"),
        ("b", "50.0"),
        ("e", "50.0"),
    ]


def test_the_current_period_estimate_is_shown_apart_from_invoiced_revenue() -> None:
    document = analytics.revenue("2026-01", "2026-02", now=utc(2, 20))
    estimate = document["estimate"]
    assert estimate is not None and estimate["periods"] == ["2026-02"]
    # February priced from the rollups: a 200, b 100, n 100, d 100; e 20 EUR.
    assert estimate["currencies"] == [
        {"currency": "EUR", "customers": 1, "revenue": "20.00", "total": "20.00"},
        {"currency": "USD", "customers": 4, "revenue": "500.00", "total": "550.00"},
    ]
    assert document["totals"][1] == {"currency": "USD", "revenue": "780.00"}


def test_daily_usage_trend_from_the_daily_rollups() -> None:
    document = analytics.usage_trend("api_calls", date(2026, 1, 1), date(2026, 1, 31), "a")
    days = {r["day"]: r["total"] for r in document["rows"]}
    assert len(days) == 31
    assert days["2026-01-05"] == "300" and days["2026-01-20"] == "100"
    assert days["2026-01-06"] == "0"
    assert document["total"] == "400" and document["events"] == 2
    everyone = analytics.usage_trend("api_calls", date(2026, 2, 1), date(2026, 2, 28))
    assert everyone["total"] == "1650"  # a 1,100 + b 50 + e 500


def test_bad_input_names_the_option() -> None:
    with pytest.raises(UserError, match=r"^--to: 2026-01 is before --from 2026-02"):
        analytics.revenue("2026-02", "2026-01", now=LATER)
    with pytest.raises(UserError, match=r"^--by: must be one of plan, metric, customer"):
        analytics.revenue("2026-01", "2026-02", by="colour", now=LATER)
    with pytest.raises(UserError, match=r"^--metric: no usage of 'nope'"):
        analytics.usage_trend("nope", date(2026, 1, 1), date(2026, 1, 2))


@pytest.mark.parametrize("trailing", [1, 2, 3])
def test_mrr_in_sql_equals_the_reference_definition(trailing: int) -> None:
    from pricing.analytics import Invoiced, movements, mrr_by_customer
    from storage.analytics import invoiced

    rows = [
        Invoiced(r.customer_id, r.month, r.currency, r.recurring, r.usage, r.months)
        for r in invoiced.customer_months("2025-01", "2026-03")
    ]
    found = {
        (r["month"], r["currency"]): r
        for r in analytics.mrr("2026-03", count=3, trailing=trailing)["rows"]
    }
    for before, month in (("2025-12", "2026-01"), ("2026-01", "2026-02"), ("2026-02", "2026-03")):
        expected = movements(
            mrr_by_customer(rows, before, trailing), mrr_by_customer(rows, month, trailing), month
        )
        for currency, moved in expected.items():
            got = found[(month, currency)]
            want = moved.rounded()
            assert (got["mrr"], got["new"], got["expansion"]) == (
                str(want.mrr),
                str(want.new),
                str(want.expansion),
            )
            assert (got["contraction"], got["churned"]) == (
                str(want.contraction),
                str(want.churned),
            )
            assert got["churned_customers"] == moved.churned_customers
