"""The OpenAPI document: served, committed (`api/openapi.json` equals what the app generates),
and the API keeps to it under schemathesis (bounded examples: a few seconds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.openapi import render
from tests.api.conftest import Headers

COMMITTED = Path(__file__).resolve().parents[2] / "api" / "openapi.json"


def test_the_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == render(), "run: python -m api.openapi > api/openapi.json"


def test_the_document_is_served(client: TestClient) -> None:
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert "/v1/events" in served.json()["paths"]


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(start_broker=False))


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_to_its_document(
    case: schemathesis.Case, key_for: Callable[[str], Headers], redis_broker: object
) -> None:
    """Whatever the document allows, with an ops key: never a 5xx, only documented statuses,
    content types and bodies."""
    case.call_and_validate(
        headers=key_for("ops"),
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
