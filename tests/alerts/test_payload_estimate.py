"""The alert payload's estimated bill, used and included quantities are the ones `meter usage`
shows, on a plan where every part of the bill counts: a base fee, graduated tiers, a
percentage charge with a fixed amount per event, a minimum spend, tax. (The alert check
prices amounts only, `services.alert_estimate`, and reuses the customer's charge memo.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pricing.money import format_decimal, format_money
from services.usage import current_usage
from tests.alerts.helpers import D, alert_rows, calls, send, setup_customer

PLAN = """
code: billed
name: Billed
currency: USD
base_fee: "49.00"
minimum_spend: "300.00"
tax_rate: "0.0825"
metrics:
  api_calls:  {aggregation: sum}
  storage_gb: {aggregation: max}
  payments:   {aggregation: sum, field: amount}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 1000, unit_amount: "0"}
      - {up_to: 5000, unit_amount: "0.013", flat_amount: "2.50"}
      - {up_to: null, unit_amount: "0.0071"}
  - {metric: storage_gb, model: standard, unit_amount: "0.37", included: 10}
  - {metric: payments, model: percentage, rate_percent: "1.3", fixed_amount: "0.30"}
spend_alerts: ["100.00", "400.00"]
"""


def _payment(amount: str) -> dict[str, object]:
    event = calls(1, customer_id="cus_b", metric="payments")
    event["properties"] = {"amount": amount}
    return event


def _check_against_usage(customer_id: str) -> None:
    report = current_usage(customer_id)
    rows = alert_rows(customer_id)
    assert rows
    latest = rows[-1]["payload"]
    assert latest["estimated_bill"] == format_money(report.estimated_total, "USD")
    for row in rows:
        payload = row["payload"]
        if payload["metric"] is not None:
            metric = report.metrics[payload["metric"]]
            assert payload["included"] == format_decimal(metric.included)


def test_the_payload_prices_the_bill_as_meter_usage_does(clean_state: None) -> None:
    setup_customer("cus_b", PLAN, starts_at=datetime.now(UTC) - timedelta(days=60))
    send(calls(850, customer_id="cus_b"), _payment("1234.56"), _payment("99.99"))
    rows = alert_rows("cus_b")
    # 80 % of the calls, and 100.00 of spend at once: the minimum spend (300.00 + tax) binds.
    assert [(r["kind"], r["metric"]) for r in rows] == [("usage", "api_calls"), ("spend", None)]
    report = current_usage("cus_b")
    assert format_money(report.estimated_total, "USD") == "324.75"  # 300.00 + 8.25 % tax
    assert rows[0]["payload"]["used"] == "850"
    assert rows[0]["payload"]["included"] == "1000"
    for row in rows:
        assert row["payload"]["estimated_bill"] == "324.75"
    # Tier 2 entered, storage past its allowance at once (80/95/100 %), spend past 400.00 with
    # the minimum no longer binding: priced again, with the memo of the charges that held.
    send(calls(60000, customer_id="cus_b"), calls(17, customer_id="cus_b", metric="storage_gb"))
    kinds = [(r["kind"], r["metric"], r["threshold"]) for r in alert_rows("cus_b")]
    assert ("usage", "storage_gb", D(1)) in kinds
    assert ("spend", None, D(400)) in kinds
    _check_against_usage("cus_b")
    latest = alert_rows("cus_b")[-1]["payload"]
    assert latest["used"] is None and latest["threshold"] == "400"
    assert current_usage("cus_b").estimated_total > 400
