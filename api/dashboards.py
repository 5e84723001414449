"""Server-rendered dashboards (Jinja2, no front-end build), from the same app and services.

`/dashboard/login` takes an API key and keeps it in an HTTP-only, same-site cookie; then a
customer key sees its customer's page (a gauge per metric against its included usage and,
where one is set, its hard limit or throttle point; the estimated bill against the spend cap;
refreshed from `GET /v1/customers/{id}/usage` every 2 s; the alerts fired this period; its
invoices),
and an ops key the ops page (ingest health, customers near their limits, failed invoice jobs
with a retry button, dead webhooks with a redeliver button). Pages are left out of the OpenAPI
document: they are for people.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import COOKIE
from api.body_limit import read_body
from api.errors import ApiError
from services import api_keys
from services.api_keys import ApiKey

router = APIRouter(prefix="/dashboard", include_in_schema=False)

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("api", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)
_LOGIN = "/dashboard/login"
_FORM_LIMIT = 4096  # bytes of a login or button form
NEAR_LIMIT_PERCENT = Decimal(80)  # the first alert threshold


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context))


def _page_key(request: Request) -> ApiKey | None:
    """The cookie's live key (counted against its rate limit), or None: go to the login."""
    text = request.cookies.get(COOKIE)
    key = api_keys.authenticate(text) if text else None
    if key is not None:
        wait = api_keys.retry_after(key, time.time())
        if wait is not None:
            raise ApiError(429, "", f"rate limit: retry in {wait} s", {"Retry-After": str(wait)})
    return key


def _home(key: ApiKey) -> str:
    if key.scope == "customer":
        return f"/dashboard/customers/{key.customer_id}"
    return "/dashboard/ops"


@router.get("")
def index(request: Request) -> Response:
    key = _page_key(request)
    return RedirectResponse(_home(key) if key else _LOGIN, status_code=303)


@router.get("/login")
def login_form() -> HTMLResponse:
    return _render("login.html", error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await read_body(request, _FORM_LIMIT)).decode(errors="replace"))
    text = (form.get("key") or [""])[0].strip()
    key = api_keys.authenticate(text) if text else None
    if key is None or key.scope == "ingest":
        page = _render("login.html", error="unknown or revoked key, or an ingest-only key")
        page.status_code = 401
        return page
    response = RedirectResponse(_home(key), status_code=303)
    response.set_cookie(COOKIE, text, httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(_LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/customers/{customer_id}")
def customer_page(customer_id: str, request: Request) -> Response:
    from services.invoice_lifecycle import list_invoices
    from services.overrides import limits_table
    from services.usage import current_usage

    key = _page_key(request)
    if key is None:
        return RedirectResponse(_LOGIN, status_code=303)
    if not api_keys.may_read(key, customer_id):
        raise ApiError(403, "scope", "this key cannot read this customer")
    report = current_usage(customer_id)
    usage = report.to_json()
    limits = limits_table(customer_id)
    return _render(
        "customer.html",
        usage=usage,
        gauges=[
            _gauge(name, m, limits["metrics"].get(name, {})) for name, m in usage["metrics"].items()
        ],
        spend=_spend(usage["estimated_total"], limits["spend_cap"]),
        alerts=_alerts(customer_id, report.segment.period.start),
        invoices=[i.to_json() for i in reversed(list_invoices(customer_id=customer_id))],
        ops=key.scope == "ops",
    )


@router.get("/customers/{customer_id}/alerts")
def customer_alerts(customer_id: str, request: Request) -> Response:
    """The page's table of this period's alerts (what its refresh puts in place)."""
    from services.overrides import current_segment

    key = _page_key(request)
    if key is None or not api_keys.may_read(key, customer_id):
        raise ApiError(403, "scope", "this key cannot read this customer")
    # Only the period is needed: the page's usage refresh prices the estimate already.
    start = current_segment(customer_id, datetime.now(UTC)).period.start
    return _render("alerts.html", alerts=_alerts(customer_id, start))


def _share(part: Decimal, whole: Decimal | None) -> float | None:
    """`part` as a share of `whole` (None without a whole; full when the whole is 0)."""
    if whole is None:
        return None
    return float(part / whole) if whole > 0 else 1.0


def _number(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _gauge(name: str, metric: dict[str, str], limits: dict[str, Any]) -> dict[str, Any]:
    """What a gauge draws: the share of the included units used (None without any), and the
    share of the hard limit (or, without one, of the throttle point) with the throttle
    point's place on that bar."""
    used, included = Decimal(metric["used"]), Decimal(metric["included"])
    hard, throttle = _number(limits.get("hard_limit")), _number(limits.get("throttle_units"))
    ceiling = hard if hard is not None else throttle
    return {
        "name": name,
        **metric,
        "share": float(used / included) if included > 0 else None,
        "hard_limit": limits.get("hard_limit"),
        "throttle_units": limits.get("throttle_units"),
        "limit_share": _share(used, ceiling),
        "throttle_mark": _share(throttle, ceiling) if throttle is not None else None,
    }


def _spend(estimated_total: str, spend_cap: str | None) -> dict[str, Any] | None:
    """The estimated bill against the spend cap (None without a cap)."""
    if spend_cap is None:
        return None
    return {"cap": spend_cap, "share": _share(Decimal(estimated_total), Decimal(spend_cap))}


def _alerts(customer_id: str, period_start: datetime) -> list[dict[str, Any]]:
    """This period's alerts, newest first, each with what it says in words."""
    from pricing.money import format_decimal
    from services.alert_settings import alerts_of_period

    alerts = alerts_of_period(customer_id, period_start)
    for alert in alerts:
        threshold = alert["threshold"]
        if alert["kind"] == "usage":
            share = format_decimal(Decimal(threshold) * 100)
            alert["text"] = f"{share}% of the {alert['basis']} included reached"
        elif alert["kind"] == "spend":
            alert["text"] = f"estimated bill reached {threshold} {alert['currency'] or ''}"
        else:
            alert["text"] = f"hard limit of {threshold} reached"
    return list(reversed(alerts))


@router.get("/ops")
def ops_page(request: Request) -> Response:
    from pricing.analytics import shift_month
    from services import analytics
    from storage.invoices.jobs import failed_jobs
    from storage.ledger.batches import stats as ingest_stats
    from storage.outbox import list_notifications
    from tasks.queues import queue_stats

    key = _page_key(request)
    if key is None:
        return RedirectResponse(_LOGIN, status_code=303)
    if key.scope != "ops":
        raise ApiError(403, "scope", "this needs an ops key")
    now = datetime.now(UTC)
    month = analytics.current_month(now)
    revenue = analytics.revenue(shift_month(month, -11), month, now=now, estimate=False)
    mrr = analytics.mrr(analytics.last_ended_month(now))
    currencies = sorted({r["currency"] for r in revenue["rows"] + mrr["rows"]})
    currency = currencies[0] if currencies else "USD"
    return _render(
        "ops.html",
        stats={"events": ingest_stats(), **queue_stats()},
        near=analytics.near_limit(NEAR_LIMIT_PERCENT, now)["rows"],
        revenue=_bars(
            [(r["month"], r["revenue"]) for r in revenue["rows"] if r["currency"] == currency],
            revenue["months"],
        ),
        mrr=_bars(
            [(r["month"], r["mrr"]) for r in mrr["rows"] if r["currency"] == currency],
            mrr["months"],
        ),
        currency=currency,
        jobs=[job.to_json() for job in failed_jobs()],
        dead=[n.to_json() for n in list_notifications(dead_only=True)],
        message=request.query_params.get("done"),
    )


def _bars(points: list[tuple[str, str]], labels: list[str]) -> list[dict[str, Any]]:
    """One bar per month (0 where none), with its height as a share of the tallest."""
    values = dict(points)
    amounts = [Decimal(values.get(label, "0")) for label in labels]
    top = max(amounts, default=Decimal(0))
    return [
        {"month": label, "amount": values.get(label, "0"), "share": float(a / top) if top else 0.0}
        for label, a in zip(labels, amounts, strict=True)
    ]


@router.post("/ops/failed-jobs/{job_id}/retry")
def retry_job(job_id: int, request: Request) -> Response:
    from tasks.billing import retry_jobs

    key = _page_key(request)
    if key is None or key.scope != "ops":
        raise ApiError(403, "scope", "this needs an ops key")
    retry_jobs([job_id])
    return RedirectResponse(f"/dashboard/ops?done=job+{job_id}+queued+again", status_code=303)


@router.post("/ops/notifications/{notification_id}/redeliver")
def redeliver(notification_id: int, request: Request) -> Response:
    from api.routers.ops import redeliver as redeliver_one

    key = _page_key(request)
    if key is None or key.scope != "ops":
        raise ApiError(403, "scope", "this needs an ops key")
    redeliver_one(notification_id, key)
    done = f"notification+{notification_id}+due+again"
    return RedirectResponse(f"/dashboard/ops?done={done}", status_code=303)
