"""`meter limits check|set|show`: the JSON check_limit returns, overrides, and bad input as
`error: field: reason` with exit status 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tasks.ingest import ingest_events
from tests.limits.helpers import setup_capped
from tests.metering.helpers import batch, event

runner = CliRunner()


@pytest.fixture(autouse=True)
def customer(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.ingest.request_invoice_refresh", lambda *args: None)
    setup_capped()
    ingest_events(batch([event(quantity=150)]))


def run_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def test_check_prints_what_check_limit_returns() -> None:
    document = run_json("limits", "check", "cus_1", "api_calls", "--quantity", "150")
    assert {k: document[k] for k in ("allowed", "reason", "used", "limit", "remaining")} == {
        "allowed": True,
        "reason": None,
        "used": "150",
        "limit": "300",
        "remaining": "150",
    }
    assert document["throttle"] is True and document["included"] == "100"
    over = run_json("limits", "check", "cus_1", "api_calls", "--quantity", "151")
    assert (over["allowed"], over["reason"]) == (False, "hard_limit")


def test_set_overrides_and_show_marks_them() -> None:
    document = run_json("limits", "set", "cus_1", "--metric", "api_calls", "--hard-limit", "1000")
    api = document["metrics"]["api_calls"]  # type: ignore[index]
    assert api["hard_limit"] == "1000" and api["overridden"] == ["hard_limit"]
    assert run_json("limits", "check", "cus_1", "api_calls", "--quantity", "151")["reason"] == (
        "spend_cap"  # 301 calls: 25.05, over the plan's cap of 25.00
    )
    assert run_json("limits", "check", "cus_1", "api_calls", "--quantity", "150")["allowed"]
    cleared = run_json("limits", "set", "cus_1", "--metric", "api_calls", "--clear", "hard-limit")
    assert cleared["metrics"]["api_calls"]["hard_limit"] == "300"  # type: ignore[index]
    shown = runner.invoke(app, ["limits", "show", "cus_1"])
    assert shown.exit_code == 0 and "spend cap: 25.00 USD" in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "cus_1", "nope"], "error: metric: 'nope' is not a metric of plan 'capped'"),
        (["check", "cus_1", "api_calls", "--quantity", "-1"], "error: quantity: must not be"),
        (["check", "nobody", "api_calls"], "error: customer_id: no customer 'nobody'"),
        (["set", "cus_1", "--hard-limit", "5"], "error: --metric: required"),
        (["set", "cus_1", "--metric", "api_calls", "--throttle-at", "95%"], '"0.95" for 95 %'),
        (["set", "cus_1", "--spend-cap", "-2"], "error: --spend-cap: must not be negative"),
        (["set", "cus_1"], "error: nothing to change"),
    ],
)
def test_bad_input_names_the_field(args: list[str], message: str) -> None:
    """`meter` (cli.main.main) prints a UserError as `error: <it>` with exit status 2."""
    from pricing.errors import UserError

    result = runner.invoke(app, ["limits", *args])
    assert isinstance(result.exception, UserError), result.output
    assert message.removeprefix("error: ") in str(result.exception)
