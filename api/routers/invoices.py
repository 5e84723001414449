"""One invoice: `GET /v1/invoices/{invoice_id}` (the `meter invoices show --json` document),
`.html` and `.pdf` (the document a customer is sent, `services.documents`). An ops key reads
any; a customer key only its own customer's — another's is answered as not found, so ids
reveal nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from api.auth import AnyKey, path_id
from api.errors import ApiError, responses
from api.schemas import json_object
from services import api_keys
from services.invoice_lifecycle import Invoice

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

_ERRORS = responses(401, 403, 404, 422, 429)


def readable_invoice(invoice_id: str, key: api_keys.ApiKey) -> Invoice:
    """The invoice if `key` may read it; 404 whether it does not exist or is another's."""
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
    return found


def _document(invoice: Invoice) -> Any:
    from services.credit_notes import by_invoice
    from services.documents.model import invoice_document

    return invoice_document(invoice, credit_note=by_invoice([invoice.id]).get(invoice.id))


# The document routes come first: `/{invoice_id}` would take `inv_1.html` as an id.
@router.get(
    "/{invoice_id}.html",
    summary="One invoice as the HTML document a customer is sent",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}, **_ERRORS},
)
def invoice_html(invoice_id: str, key: AnyKey) -> HTMLResponse:
    from services.documents.html import render_html

    return HTMLResponse(render_html(_document(readable_invoice(invoice_id, key))))


@router.get(
    "/{invoice_id}.pdf",
    summary="One invoice as a PDF",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **_ERRORS},
)
def invoice_pdf(invoice_id: str, key: AnyKey) -> Response:
    from services.documents.pdf import render_pdf

    doc = _document(readable_invoice(invoice_id, key))
    return Response(
        render_pdf(doc),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{doc.file_name}.pdf"'},
    )


@router.get(
    "/{invoice_id}",
    summary="One invoice",
    responses={200: json_object("the `meter invoices show --json` document"), **_ERRORS},
)
def invoice(invoice_id: str, key: AnyKey) -> dict[str, Any]:
    return readable_invoice(invoice_id, key).to_json()
