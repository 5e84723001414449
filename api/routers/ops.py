"""For ops keys: plans, customers, ingest health, failed invoice jobs and their retry."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth import OpsKey
from api.errors import responses
from api.schemas import json_array, json_object

log = logging.getLogger(f"meterline.{__name__}")

router = APIRouter(prefix="/v1", tags=["ops"])

_ERRORS = responses(401, 403, 429)


@router.get("/plans", summary="Stored plans", responses={200: json_array("plans"), **_ERRORS})
def plans(key: OpsKey) -> list[dict[str, Any]]:
    """Each plan's latest version (`meter plans list --json`)."""
    from storage.catalog.plans import list_plans

    return [
        {
            "code": r.code,
            "name": r.name,
            "currency": r.currency,
            "version": r.version,
            "versions": r.versions,
            "created_at": r.created_at.isoformat(),
        }
        for r in list_plans()
    ]


@router.get("/customers", summary="Customers", responses={200: json_array("customers"), **_ERRORS})
def customers(key: OpsKey, plan: str | None = None) -> list[dict[str, Any]]:
    """Customers with plan, status, time zone (`meter customers list --json`)."""
    from services.customers import list_customers, status

    return [
        {
            "id": c.id,
            "name": c.name,
            "plan": c.plan_code,
            "status": status(c),
            "timezone": c.timezone,
            "anchor_day": c.anchor_day,
            "starts_at": c.starts_at.isoformat(),
            "ends_at": c.ends_at.isoformat() if c.ends_at else None,
            "created_at": c.created_at.isoformat(),
        }
        for c in list_customers(plan_code=plan)
    ]


@router.get(
    "/ops/stats",
    summary="Ingest health",
    responses={200: json_object("the `meter ops stats --json` document"), **_ERRORS},
)
def stats(key: OpsKey) -> dict[str, Any]:
    """Events accepted, duplicates, rejected by reason; queue depths; oldest message age."""
    from storage.ledger.batches import stats as ingest_stats
    from tasks.queues import broker_warnings, queue_stats

    return {"events": ingest_stats(), **queue_stats(), "warnings": broker_warnings()}


@router.get(
    "/ops/failed-jobs",
    summary="Failed invoice jobs",
    responses={200: json_array("`meter ops failed --json`"), **_ERRORS},
)
def failed_jobs(key: OpsKey) -> list[dict[str, Any]]:
    from storage.invoices.jobs import failed_jobs as failed

    return [job.to_json() for job in failed()]


@router.post(
    "/ops/failed-jobs/{job_id}/retry",
    summary="Run a failed invoice job again",
    responses={200: json_object("the job, queued again"), **responses(401, 403, 404, 422, 429)},
)
def retry_job(job_id: Annotated[int, Path(ge=1, le=2**63 - 1)], key: OpsKey) -> dict[str, Any]:
    """Queue the job again (regenerating an invoice that exists changes nothing)."""
    from tasks.billing import retry_jobs

    (job,) = retry_jobs([job_id])
    return job.to_json()


@router.get(
    "/ops/notifications",
    summary="Webhook notifications not delivered",
    responses={200: json_array("`meter ops notifications --json`"), **_ERRORS},
)
def notifications(
    key: OpsKey, dead: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Pending and dead notifications, oldest first (only dead ones with `dead=true`)."""
    from storage.outbox import list_notifications

    return [n.to_json() for n in list_notifications(dead_only=dead, limit=limit)]


@router.post(
    "/ops/notifications/{notification_id}/redeliver",
    summary="Send a webhook notification again",
    responses={
        200: json_object("what was made due again"),
        **responses(401, 403, 404, 422, 429),
    },
)
def redeliver(
    notification_id: Annotated[int, Path(ge=1, le=2**63 - 1)], key: OpsKey
) -> dict[str, Any]:
    """A fresh round of attempts for an undelivered notification (`meter ops redeliver`);
    a worker is asked to deliver it now."""
    from storage import outbox
    from storage.errors import NotFound

    if not outbox.existing_ids([notification_id]):
        raise NotFound("notification_id", f"no notification {notification_id}")
    made_due = outbox.redeliver([notification_id])
    if made_due:
        _request_delivery()
    return {"redelivered": made_due, "already_delivered": [] if made_due else [notification_id]}


def _request_delivery() -> None:
    from tasks.notify import request_delivery

    try:
        request_delivery()
    except Exception:  # the scheduler's sweep delivers them within seconds anyway
        log.warning("could not ask a worker for a delivery run", exc_info=True)
