"""Metering tests call the ingest actor directly; the invoice refreshes it asks for on late
usage are recorded here instead of being sent to a broker."""

from __future__ import annotations

from datetime import datetime

import pytest


@pytest.fixture(autouse=True)
def invoice_refreshes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, datetime]]:
    requested: list[tuple[str, datetime]] = []
    monkeypatch.setattr(
        "tasks.ingest.request_invoice_refresh",
        lambda customer_id, start: requested.append((customer_id, start)),
    )
    return requested
