"""Revenue analytics for ops keys: the `meter analytics --json` documents over HTTP (the
definitions and the reads are `services.analytics`')."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import OpsKey
from api.errors import responses
from api.schemas import json_object

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

_ERRORS = responses(401, 403, 422, 429)
Month = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")]


@router.get(
    "/revenue",
    summary="Invoiced revenue per month",
    responses={200: json_object("`meter analytics revenue --json`"), **_ERRORS},
)
def revenue(
    key: OpsKey,
    first: Annotated[Month, Query(alias="from")] = None,
    last: Annotated[Month, Query(alias="to")] = None,
    by: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Months `from`..`to` (default: the last 12 up to this one), optionally by plan, metric or
    customer; the current period's estimate apart."""
    from pricing.analytics import shift_month
    from services.analytics import current_month, revenue

    now = datetime.now(UTC)
    last = last or current_month(now)
    return revenue(first or shift_month(last, -11), last, by=by, now=now)


@router.get(
    "/mrr",
    summary="MRR and ARR with their movements",
    responses={200: json_object("`meter analytics mrr --json`"), **_ERRORS},
)
def mrr(
    key: OpsKey, month: Month = None, months: Annotated[int, Query(ge=1, le=120)] = 12
) -> dict[str, Any]:
    """The `months` months ending with `month` (default: the last one that ended)."""
    from services.analytics import last_ended_month, mrr

    return mrr(month or last_ended_month(datetime.now(UTC)), count=months)


@router.get(
    "/near-limit",
    summary="Customers near their included usage or limits",
    responses={200: json_object("`meter analytics near-limit --json`"), **_ERRORS},
)
def near_limit(
    key: OpsKey, threshold: Annotated[Decimal, Query(gt=0, le=1000)] = Decimal(80)
) -> dict[str, Any]:
    """Metrics at or above `threshold` percent of their included allowance or hard limit."""
    from services.analytics import near_limit

    return near_limit(threshold, datetime.now(UTC))
