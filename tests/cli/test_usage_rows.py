"""`meter usage`: the base fee, the minimum-spend true-up and tax are rows of their own (table
and JSON), so the rows add up to the estimated total."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from pricing.periods import billing_period
from pricing.plans import load_plan
from services.customers import create_customer
from services.usage import current_usage
from storage.catalog.plans import apply_plan
from tasks.ingest import ingest_events
from tests.metering.helpers import batch, event

runner = CliRunner()
D = Decimal

PLAN = """
code: rows
name: Rows
currency: USD
base_fee: "31.00"
minimum_spend: "62.00"
tax_rate: "0.10"
metrics:
  api_calls: {aggregation: sum}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {up_to: 100, unit_amount: "0", flat_amount: "3.00"}
      - {up_to: null, unit_amount: "0.01"}
"""


def assert_rows_add_up(document: dict[str, Any]) -> None:
    costs = sum((D(m["estimated_cost"]) for m in document["metrics"].values()), start=D(0))
    rows = costs + D(document["base_fee"]) + D(document["minimum_true_up"])
    assert rows == D(document["subtotal"])
    assert D(document["subtotal"]) + D(document["tax"]) == D(document["estimated_total"])


@pytest.mark.date_sensitive
def test_usage_rows_add_up_to_the_estimated_total(clean_state: None) -> None:
    apply_plan(load_plan(PLAN))
    # started 60 days ago: before the current period, whatever today is, so nothing prorates
    create_customer("cus_rows", "rows", starts_at=datetime.now(UTC) - timedelta(days=60))
    ingest_events(batch([event("api_calls", "150", customer_id="cus_rows")]))

    result = runner.invoke(app, ["usage", "cus_rows", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    # usage: 3.00 flat + 50 × 0.01 = 3.50; base fee 31.00; true-up 62 − 34.50 = 27.50;
    # subtotal 62.00, tax 6.20, total 68.20
    assert document["metrics"]["api_calls"]["estimated_cost"] == "3.50"
    assert (document["base_fee"], document["minimum_true_up"]) == ("31.00", "27.50")
    assert (document["subtotal"], document["tax_rate"], document["tax"]) == ("62.00", "0.1", "6.20")
    assert document["estimated_total"] == "68.20"
    assert "proration" not in document
    assert_rows_add_up(document)

    table = runner.invoke(app, ["usage", "cus_rows"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    for label, amount in [
        ("api_calls", "3.50"),
        ("base fee", "31.00"),
        ("minimum spend true-up", "27.50"),
        ("tax (10 %)", "6.20"),
    ]:
        assert any(label in line and amount in line for line in lines), (label, table.output)
    assert "estimated total 68.20 USD" in table.output


def test_prorated_rows_add_up_too(clean_state: None) -> None:
    apply_plan(load_plan(PLAN))
    period = billing_period(datetime(2026, 3, 10, tzinfo=UTC), timezone="UTC")
    starts = period.start + timedelta(days=14)  # 15 March: 17 of March's 31 days
    create_customer("cus_mid", "rows", starts_at=starts)

    document = current_usage("cus_mid", starts + timedelta(days=2)).to_json()
    # base fee 31 × 17/31 = 17.00; minimum 62 × 17/31 = 34.00; usage 3.00 (the first tier's
    # flat amount at quantity 0); true-up 34 − 20 = 14.00; tax 3.40; total 37.40
    assert document["proration"] == {"days": 17, "period_days": 31}
    assert document["metrics"]["api_calls"]["estimated_cost"] == "3.00"
    assert (document["base_fee"], document["minimum_true_up"]) == ("17.00", "14.00")
    assert (document["subtotal"], document["tax"]) == ("34.00", "3.40")
    assert document["estimated_total"] == "37.40"
    assert_rows_add_up(document)
