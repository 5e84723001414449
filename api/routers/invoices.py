"""`GET /v1/invoices/{invoice_id}`: one invoice with its lines (the `meter invoices show
--json` document). An ops key reads any; a customer key only its own customer's — another's
is answered as not found, so ids reveal nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import AnyKey, path_id
from api.errors import ApiError, responses
from api.schemas import json_object
from services import api_keys

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])


@router.get(
    "/{invoice_id}",
    summary="One invoice",
    responses={200: json_object("the `meter invoices show --json` document"),
               **responses(401, 403, 404, 429)},
)  # fmt: skip
def invoice(invoice_id: str, key: AnyKey) -> dict[str, Any]:
    from services.invoice_lifecycle import get_invoice
    from storage.errors import NotFound

    path_id("invoice_id", invoice_id)
    if key.scope == "ingest":
        raise ApiError(403, "scope", "reading invoices needs an ops or customer key")
    try:
        found = get_invoice(invoice_id)
    except NotFound:
        found = None
    if found is None or not api_keys.may_read(key, found.customer_id):
        raise ApiError(404, "invoice_id", "no such invoice")
    return found.to_json()
