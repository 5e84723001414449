"""A NUL character in a query parameter or a path is a 422 naming it, never a 500.

PostgreSQL text cannot hold NUL; schemathesis found `GET /v1/customers?plan=%00` answered 500.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.api.conftest import Headers


def test_nul_in_a_query_parameter_is_a_422_naming_it(
    client: TestClient, key_for: Callable[[str], Headers]
) -> None:
    ops = key_for("ops")
    answer = client.get("/v1/customers?plan=%00", headers=ops)
    assert answer.status_code == 422
    assert answer.json() == {
        "error": {"field": "plan", "reason": "must not contain a NUL character"}
    }
    assert client.get("/v1/customers?plan=live", headers=ops).status_code == 200


def test_nul_in_a_path_is_a_422(client: TestClient, key_for: Callable[[str], Headers]) -> None:
    answer = client.get("/v1/customers/cus%00a/usage", headers=key_for("ops"))
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "path"
