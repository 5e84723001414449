"""A customer's usage, limits and invoices: `/v1/customers/{customer_id}/...`.

Readable with an ops key or that customer's own key (usage, alerts, invoices); limits also
with an ingest key (what a producer gates its requests on). The documents are the CLI's
`--json` ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import LimitKey, ReaderKey, path_id
from api.errors import responses
from api.schemas import ALERTS_RESPONSE, json_array, json_object

router = APIRouter(prefix="/v1/customers/{customer_id}", tags=["customers"])

_ERRORS = responses(401, 403, 404, 422, 429)


@router.get(
    "/usage",
    summary="Current usage and estimated bill",
    responses={200: json_object("the `meter usage --json` document"), **_ERRORS},
)
def usage(customer_id: str, key: ReaderKey) -> dict[str, Any]:
    """This period per metric: used, included, overage, estimated cost; the estimated total."""
    from services.usage import current_usage

    return current_usage(customer_id).to_json()


@router.get(
    "/limits/{metric}",
    summary="May the customer use more of a metric?",
    responses={200: json_object("what `check_limit` returns"), **_ERRORS},
)
def limit(customer_id: str, metric: str, key: LimitKey, quantity: str = "1") -> dict[str, Any]:
    """What `check_limit` answers for `quantity` more (default 1): allowed, reason
    (`hard_limit`, `spend_cap`), throttle, used, included, limit, remaining, resets_at; and
    whether the included units are used up (`exceeded`)."""
    from services.limits import check_limit

    path_id("metric", metric)
    check = check_limit(customer_id, metric, quantity)
    return {**check.to_json(), "exceeded": check.exceeded}


@router.get(
    "/alerts",
    summary="Alerts fired for the customer",
    responses={200: ALERTS_RESPONSE, **_ERRORS},
)
def alerts(customer_id: str, key: ReaderKey, period: str | None = None) -> list[dict[str, Any]]:
    """Usage, spend and limit alerts fired for the customer, oldest first: every period, or
    only `period` (YYYY-MM, or YYYY on a yearly plan). The `meter alerts list --json` fields."""
    from services.alert_settings import alert_json, list_alerts
    from storage.catalog.customers import get_customer

    get_customer(customer_id)  # 404 for an unknown customer, not an empty list
    return [alert_json(alert) for alert in list_alerts(customer_id, period)]


@router.get(
    "/invoices",
    summary="The customer's invoices",
    responses={200: json_array("invoice summaries, oldest period first"), **_ERRORS},
)
def invoices(customer_id: str, key: ReaderKey) -> list[dict[str, Any]]:
    """Every invoice of the customer (summaries; `GET /v1/invoices/{id}` for the lines)."""
    from services.invoice_lifecycle import list_invoices
    from storage.catalog.customers import get_customer

    get_customer(customer_id)  # 404 for an unknown customer, not an empty list
    return [invoice_summary(i.to_json()) for i in list_invoices(customer_id=customer_id)]


def invoice_summary(document: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id", "number", "customer_id", "period", "period_start", "period_end", "status",
        "plan", "plan_version", "currency", "subtotal", "tax", "total",
    )  # fmt: skip
    return {key: document.get(key) for key in keys}
