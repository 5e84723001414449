"""`meter api-keys create|list|revoke`: the key is shown once and works; list never shows
it; revoke ends it; a bad scope or an unknown customer is `error: field: reason`, exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import cli.main
from cli.main import app
from services import api_keys
from tests.metering.helpers import setup_customer

runner = CliRunner()


def test_create_list_revoke(clean_state: None) -> None:
    setup_customer("cus_1")
    created = runner.invoke(app, ["api-keys", "create", "--scope", "customer:cus_1", "--json"])
    assert created.exit_code == 0, created.output
    document = json.loads(created.output)
    assert document["scope"] == "customer:cus_1"
    key = api_keys.authenticate(document["key"])
    assert key is not None and key.customer_id == "cus_1"

    listed = runner.invoke(app, ["api-keys", "list", "--json"])
    assert listed.exit_code == 0
    assert [k["id"] for k in json.loads(listed.output)] == [document["id"]]
    assert document["key"] not in listed.output

    revoked = runner.invoke(app, ["api-keys", "revoke", document["id"], "--json"])
    assert revoked.exit_code == 0
    assert json.loads(revoked.output)["revoked_at"] is not None
    assert api_keys.authenticate(document["key"]) is None


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("admin", "error: scope: expected one of ops, ingest, customer:ID, got 'admin'"),
        ("customer:", "error: scope: expected one of"),
        ("customer:cus_nobody", "error: id: no customer 'cus_nobody'"),
    ],
)
def test_bad_scope_and_unknown_customer(
    clean_state: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scope: str,
    message: str,
) -> None:
    monkeypatch.setattr("sys.argv", ["meter", "api-keys", "create", "--scope", scope])
    with pytest.raises(SystemExit) as exited:
        cli.main.main()
    assert exited.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
