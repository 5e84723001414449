"""What the API reads is what the CLI and the services say: usage (`meter usage --json`),
limits, invoices (JSON, HTML, PDF), ops lists and the retry of a failed invoice job."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import pypdf
import pytest
from fastapi.testclient import TestClient

from pricing.periods import billing_period
from services.invoice_jobs import run_invoice_job
from services.invoice_lifecycle import finalize, get_invoice
from services.usage import current_usage
from storage.invoices import jobs
from tests.api.conftest import Headers
from tests.metering.helpers import in_previous_period


def ingest(customer_id: str, count: int, tag: str, at: datetime | None = None) -> None:
    from tasks.ingest import ingest_events

    stamp = (at or datetime.now(UTC)).isoformat()
    events = [
        {"event_id": f"{tag}-{i}", "customer_id": customer_id, "metric": "api_calls",
         "quantity": "1", "timestamp": stamp, "properties": {}}
        for i in range(count)
    ]  # fmt: skip
    ingest_events.fn({"batch_id": f"reads-{tag}", "events": events})


@pytest.fixture
def invoice_id(customers: list[str], stub_broker: object) -> str:
    """A finalized invoice of cus_a for the last period (500 api_calls)."""
    ingest("cus_a", 500, "last", at=in_previous_period())
    period = billing_period(in_previous_period())
    return finalize(run_invoice_job("cus_a", period.start)).id


def test_usage_is_the_meter_usage_document(
    client: TestClient, key_for: Callable[[str], Headers]
) -> None:
    ingest("cus_a", 42, "now")
    answer = client.get("/v1/customers/cus_a/usage", headers=key_for("customer:cus_a"))
    assert answer.status_code == 200
    document = answer.json()
    expected = current_usage("cus_a").to_json()
    document.pop("as_of"), expected.pop("as_of")
    assert document == expected
    assert document["metrics"]["api_calls"]["used"] == "42"


def test_limits(client: TestClient, key_for: Callable[[str], Headers]) -> None:
    ingest("cus_a", 120, "now")
    answer = client.get("/v1/customers/cus_a/limits/api_calls", headers=key_for("ingest"))
    assert answer.status_code == 200
    document = answer.json() | {"used": "120"}
    kept = ("customer_id", "metric", "used", "included", "remaining", "exceeded")
    assert {k: document[k] for k in kept} == {
        "customer_id": "cus_a", "metric": "api_calls", "used": "120", "included": "100",
        "remaining": "0", "exceeded": True,
    }  # fmt: skip
    # check_limit's whole answer (additive): no hard limit or cap in this plan, so allowed.
    assert (document["allowed"], document["reason"], document["limit"]) == (True, None, None)
    unknown = client.get("/v1/customers/cus_a/limits/nope", headers=key_for("ops"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "metric"
    nobody = client.get("/v1/customers/cus_nobody/usage", headers=key_for("ops"))
    assert nobody.status_code == 404


def test_invoices_json_html_pdf_and_their_owner(
    client: TestClient, key_for: Callable[[str], Headers], invoice_id: str
) -> None:
    own, other = key_for("customer:cus_a"), key_for("customer:cus_b")
    listed = client.get("/v1/customers/cus_a/invoices", headers=own).json()
    assert [i["id"] for i in listed] == [invoice_id]
    document = client.get(f"/v1/invoices/{invoice_id}", headers=own).json()
    assert document == get_invoice(invoice_id).to_json()

    html = client.get(f"/v1/invoices/{invoice_id}.html", headers=own)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert f"Invoice {document['number']}" in html.text and document["total"] in html.text
    pdf = client.get(f"/v1/invoices/{invoice_id}.pdf", headers=own)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    assert document["total"] in text

    for path in (f"/v1/invoices/{invoice_id}", f"/v1/invoices/{invoice_id}.pdf"):
        hidden = client.get(path, headers=other)
        missing = client.get(path.replace(invoice_id, "inv_nothing"), headers=other)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json()
    assert client.get(f"/v1/invoices/{invoice_id}", headers=key_for("ingest")).status_code == 403


def test_ops_lists_and_retry(
    client: TestClient, key_for: Callable[[str], Headers], stub_broker: object
) -> None:
    ops = key_for("ops")
    assert [p["code"] for p in client.get("/v1/plans", headers=ops).json()] == ["live"]
    assert [c["id"] for c in client.get("/v1/customers", headers=ops).json()] == ["cus_a", "cus_b"]
    period = billing_period(in_previous_period())
    (job,), _ = jobs.open_jobs([jobs.JobKey("cus_b", period.start, period.end, period.label)])
    jobs.fail("cus_b", period.start, "RuntimeError: down")
    failed = client.get("/v1/ops/failed-jobs", headers=ops).json()
    assert [(j["id"], j["last_error"]) for j in failed] == [(job.id, "RuntimeError: down")]
    retried = client.post(f"/v1/ops/failed-jobs/{job.id}/retry", headers=ops)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert client.get("/v1/ops/failed-jobs", headers=ops).json() == []
    assert client.post("/v1/ops/failed-jobs/999999/retry", headers=ops).status_code == 404
    assert client.get("/v1/ops/notifications?dead=true", headers=ops).json() == []
    assert client.post("/v1/ops/notifications/5/redeliver", headers=ops).status_code == 404


def test_analytics(client: TestClient, key_for: Callable[[str], Headers], invoice_id: str) -> None:
    from services import analytics

    ops = key_for("ops")
    invoice = get_invoice(invoice_id)
    revenue = client.get(
        f"/v1/analytics/revenue?from={invoice.period_label}&to={invoice.period_label}",
        headers=ops,
    )
    assert revenue.status_code == 200
    assert revenue.json()["rows"][0]["revenue"] == str(invoice.subtotal)
    month = client.get(f"/v1/analytics/mrr?month={invoice.period_label}&months=1", headers=ops)
    assert month.json() == analytics.mrr(str(invoice.period_label), count=1)
    bad = client.get("/v1/analytics/mrr?month=2026-13", headers=ops)
    assert bad.status_code == 422
    assert (
        client.get("/v1/analytics/near-limit", headers=key_for("customer:cus_a")).status_code == 403
    )


def test_alerts_this_period_and_past_ones(
    client: TestClient, key_for: Callable[[str], Headers], stub_broker: object
) -> None:
    from services.alert_settings import alert_json, list_alerts

    last = billing_period(in_previous_period())
    ingest("cus_a", 500, "last", at=in_previous_period())  # 80, 95 and 100 % of 100 included
    ingest("cus_a", 90, "now")  # 80 % only
    ingest("cus_b", 100, "b")
    this = billing_period(datetime.now(UTC)).label
    own = key_for("customer:cus_a")

    every = client.get("/v1/customers/cus_a/alerts", headers=own)
    assert every.status_code == 200
    assert every.json() == [alert_json(alert) for alert in list_alerts("cus_a", None)]
    fired = [(a["period"], a["kind"], a["metric"], a["threshold"]) for a in every.json()]
    assert fired == [
        (last.label, "usage", "api_calls", "0.8"), (last.label, "usage", "api_calls", "0.95"),
        (last.label, "usage", "api_calls", "1"), (this, "usage", "api_calls", "0.8"),
    ]  # fmt: skip
    assert {a["customer_id"] for a in every.json()} == {"cus_a"}
    now = client.get(f"/v1/customers/cus_a/alerts?period={this}", headers=own).json()
    assert [(a["threshold"], a["value"], a["basis"]) for a in now] == [("0.8", "90", "100")]
    past = client.get(f"/v1/customers/cus_a/alerts?period={last.label}", headers=own).json()
    assert [a["threshold"] for a in past] == ["0.8", "0.95", "1"]

    ops = key_for("ops")
    assert [
        a["customer_id"] for a in client.get("/v1/customers/cus_b/alerts", headers=ops).json()
    ] == ["cus_b"] * 3
    assert client.get("/v1/customers/cus_b/alerts", headers=own).status_code == 403
    assert client.get("/v1/customers/cus_a/alerts", headers=key_for("ingest")).status_code == 403
    bad = client.get("/v1/customers/cus_a/alerts?period=2026-13", headers=own)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "period"
    assert client.get("/v1/customers/cus_a/alerts?period=2026", headers=own).json() == []
    assert client.get("/v1/customers/cus_nobody/alerts", headers=ops).status_code == 404
