"""Alert tests call the ingest actor directly, as the metering tests do: the invoice
refreshes it would send are recorded here instead."""

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


# `meter ARGS` in this process, as the CLI tests run it (exit status 2 for user errors).
from tests.cli.test_bad_input import run  # noqa: E402, F401
