"""The dashboards in a real headless Chromium (Debian's `chromium`, driven by Playwright with
its executable path) against `meter web` running on the session's servers with real data: the
numbers shown equal the API's, the customer page follows new usage within its 2 s refresh,
and the ops page's Retry re-queues a failed invoice job. Screenshots are kept
(METER_SCREENSHOT_DIR, else the test's temporary directory)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pricing.periods import billing_period
from services import api_keys
from services.invoice_jobs import run_invoice_job
from services.invoice_lifecycle import finalize
from storage import outbox
from storage.invoices import jobs
from tests.api.test_http_process import _METER, _env, free_port, started, wait_for
from tests.conftest import SessionServers
from tests.metering.helpers import in_previous_period, setup_customer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run)"),
]
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def ingest(customer_id: str, count: int, tag: str, at: datetime | None = None) -> None:
    from tasks.ingest import ingest_events

    now = (at or datetime.now(UTC)).isoformat()
    events = [
        {"event_id": f"{tag}-{i}", "customer_id": customer_id, "metric": "api_calls",
         "quantity": "1", "timestamp": now, "properties": {}}
        for i in range(count)
    ]  # fmt: skip
    ingest_events.fn({"batch_id": f"dash-{tag}", "events": events})


@pytest.fixture
def web(clean_state: None, test_servers: SessionServers) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", _METER, "web", "--port", str(port)]
    with started(command, _env(test_servers)):
        wait_for(lambda: _reachable(base))
        yield base


def _reachable(base: str) -> bool:
    try:
        return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("METER_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def sign_in(browser: Any, base: str, key: str) -> Any:
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(f"{base}/dashboard/login")
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_load_state()
    return page


def test_customer_page_shows_the_api_numbers_and_follows_new_usage(
    web: str, browser: Any, shots: Path
) -> None:
    setup_customer("cus_dash")
    ingest("cus_dash", 90, "first")  # 90 of the 100 included api_calls
    _, key = api_keys.create("customer:cus_dash")
    page = sign_in(browser, web, key)
    assert page.url.endswith("/dashboard/customers/cus_dash")

    usage = httpx.get(
        f"{web}/v1/customers/cus_dash/usage", headers={"Authorization": f"Bearer {key}"}
    ).json()
    card = page.locator('[data-metric="api_calls"]')
    assert card.locator(".used").inner_text() == usage["metrics"]["api_calls"]["used"] == "90"
    assert card.locator(".included").inner_text() == usage["metrics"]["api_calls"]["included"]
    assert page.inner_text("#estimated-total") == usage["estimated_total"]
    assert card.locator(".pct").text_content() == "90%"
    assert "warn" in (card.get_attribute("class") or "")
    page.screenshot(path=str(shots / "customer.png"), full_page=True)

    ingest("cus_dash", 30, "second")  # past the included units: live within the 2 s refresh
    page.wait_for_function(
        "document.querySelector('[data-metric=\"api_calls\"] .used').textContent === '120'",
        timeout=10_000,
    )
    usage = httpx.get(
        f"{web}/v1/customers/cus_dash/usage", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert page.inner_text("#estimated-total") == usage["estimated_total"]
    assert card.locator(".overage").inner_text() == usage["metrics"]["api_calls"]["overage"]
    assert "over" in (card.get_attribute("class") or "")
    page.screenshot(path=str(shots / "customer-over.png"), full_page=True)

    other = page.goto(f"{web}/dashboard/customers/cus_other")
    assert other is not None and other.status == 403


def test_ops_page_numbers_and_retry(web: str, browser: Any, shots: Path) -> None:
    setup_customer("cus_near")
    ingest("cus_near", 95, "near")
    last_period = billing_period(in_previous_period())
    ingest("cus_near", 500, "last", at=in_previous_period())  # for an invoice
    finalize(run_invoice_job("cus_near", last_period.start))
    period = billing_period(datetime.now(UTC) - timedelta(days=40))
    key = jobs.JobKey("cus_near", period.start, period.end, period.label)
    (job,), _ = jobs.open_jobs([key])
    jobs.fail("cus_near", period.start, "RuntimeError: the invoice service was down")
    dead = outbox.enqueue("alert.fired", {"customer_id": "cus_near", "metric": "api_calls"})
    outbox.mark_failed(dead, "HTTP 500 from the receiver", timedelta(seconds=1), dead=True)
    _, ops_key = api_keys.create("ops")
    headers = {"Authorization": f"Bearer {ops_key}"}

    page = sign_in(browser, web, ops_key)
    assert page.url.endswith("/dashboard/ops")
    stats = httpx.get(f"{web}/v1/ops/stats", headers=headers).json()
    assert page.inner_text("#accepted") == str(stats["events"]["accepted"]) == "595"
    assert "cus_near" in page.inner_text("#near-limit")
    assert "95.0 %" in page.inner_text("#near-limit")
    revenue = httpx.get(f"{web}/v1/analytics/revenue", headers=headers).json()
    (row,) = revenue["rows"]
    bar = page.locator(f'#revenue-chart rect[data-month="{last_period.label}"]')
    assert bar.get_attribute("data-amount") == row["revenue"]
    assert Decimal(row["revenue"]) > 0
    assert float(bar.get_attribute("height") or 0) > 100  # the tallest bar
    failed = httpx.get(f"{web}/v1/ops/failed-jobs", headers=headers).json()
    assert [j["id"] for j in failed] == [job.id]
    row = page.locator(f'tr[data-job="{job.id}"]')
    assert "the invoice service was down" in row.inner_text()
    page.screenshot(path=str(shots / "ops.png"), full_page=True)

    row.locator("button").click()
    page.wait_for_load_state()
    assert f"job {job.id} queued again" in page.inner_text("#done")
    assert page.locator("#no-failed-jobs").count() == 1
    assert jobs.get_jobs([job.id])[0].status == "pending"
    assert httpx.get(f"{web}/v1/ops/failed-jobs", headers=headers).json() == []
    page.screenshot(path=str(shots / "ops-retried.png"), full_page=True)

    webhook = page.locator(f'tr[data-notification="{dead}"]')
    assert "HTTP 500 from the receiver" in webhook.inner_text()
    webhook.locator("button").click()
    page.wait_for_load_state()
    assert f"notification {dead} due again" in page.inner_text("#done")
    assert httpx.get(f"{web}/v1/ops/notifications?dead=true", headers=headers).json() == []
    assert page.locator(f'tr[data-notification="{dead}"]').count() == 0


def test_customer_page_limits_spend_cap_and_alerts(web: str, browser: Any, shots: Path) -> None:
    """The gauge's second bar (used against the hard limit, the throttle point marked), the
    estimated bill against the spend cap and this period's alerts, each equal to the API's,
    and following new usage past the hard limit and the cap."""
    from services.overrides import set_overrides
    from storage.catalog.limits import OverrideChange

    setup_customer("cus_lim")
    limits = OverrideChange(
        metric="api_calls", hard_limit=Decimal(150), throttle_at=Decimal("0.95")
    )
    set_overrides("cus_lim", limits)
    set_overrides("cus_lim", OverrideChange(spend_cap=Decimal("14.00")))
    ingest("cus_lim", 120, "lim")  # 80, 95 and 100 % of 100 included; past the throttle (95)
    _, key = api_keys.create("customer:cus_lim")
    headers = {"Authorization": f"Bearer {key}"}
    page = sign_in(browser, web, key)

    usage = httpx.get(f"{web}/v1/customers/cus_lim/usage", headers=headers).json()
    check = httpx.get(f"{web}/v1/customers/cus_lim/limits/api_calls?quantity=0", headers=headers)
    limit = check.json()
    card = page.locator('[data-metric="api_calls"]')
    assert card.locator(".hard-limit").inner_text() == limit["limit"] == "150"
    assert card.locator(".throttle-units").inner_text() == limit["throttle_units"] == "95"
    assert card.locator(".limit-pct").inner_text() == "80%"  # 120 of 150
    assert "warn" in (card.locator(".limit").get_attribute("class") or "")  # throttled
    assert card.locator(".limit .mark").get_attribute("style") == "left: 63.3%"  # 95 / 150
    assert page.locator('[data-metric="peak_gb"] .limit').count() == 0  # no limit, no bar
    assert page.inner_text("#spend-cap .cap") == limit["spend_cap"] == "14.00"
    assert limit["estimated_total"] == usage["estimated_total"]
    share = Decimal(usage["estimated_total"]) / Decimal("14.00")
    assert page.inner_text("#spend-cap .cap-pct") == f"{share * 100:.0f}%"
    assert "warn" in (page.get_attribute("#spend-cap", "class") or "")

    label = billing_period(datetime.now(UTC)).label
    alerts = httpx.get(f"{web}/v1/customers/cus_lim/alerts?period={label}", headers=headers)
    fired = alerts.json()
    assert [a["threshold"] for a in fired] == ["0.8", "0.95", "1"]
    rows = page.locator("#alerts tr[data-alert]")
    assert [r.get_attribute("data-alert") for r in rows.all()] == [
        str(a["id"]) for a in reversed(fired)
    ]
    assert "95% of the 100 included reached" in page.inner_text("#alerts")
    page.screenshot(path=str(shots / "customer-limits.png"), full_page=True)

    ingest("cus_lim", 40, "past")  # 160: past the hard limit (an alert) and the spend cap
    page.wait_for_function(
        "document.querySelectorAll('#alerts tr[data-alert]').length === 4", timeout=10_000
    )
    assert card.locator(".limit-pct").inner_text() == "107%"
    assert "over" in (card.locator(".limit").get_attribute("class") or "")
    usage = httpx.get(f"{web}/v1/customers/cus_lim/usage", headers=headers).json()
    assert Decimal(usage["estimated_total"]) > Decimal("14.00")
    assert page.inner_text("#estimated-total") == usage["estimated_total"]
    assert "over" in (page.get_attribute("#spend-cap", "class") or "")
    newest = page.locator("#alerts tr[data-alert]").first
    assert "hard limit of 150 reached" in newest.inner_text()
    page.screenshot(path=str(shots / "customer-limits-over.png"), full_page=True)
