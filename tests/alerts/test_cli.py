"""`meter alerts list / set / show` and the thresholds fired in `meter usage`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from cli.main import app
from pricing.periods import billing_period
from tests.alerts.helpers import D, calls, fired, send, setup_customer
from tests.cli.test_bad_input import Meter, assert_refused

runner = CliRunner()


@pytest.fixture(autouse=True)
def customer(clean_state: None) -> str:
    return setup_customer()


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_alerts_list_by_customer_and_period() -> None:
    setup_customer("cus_b")
    send(calls(8000), calls(10000, customer_id="cus_b"))
    label = billing_period(datetime.now(UTC)).label
    listed = _json("alerts", "list", "--customer", "cus_a")
    assert isinstance(listed, list) and len(listed) == 1
    assert listed[0]["threshold"] == "0.8" and listed[0]["basis"] == "10000"
    assert listed[0]["period"] == label and listed[0]["value"] == "8000"
    assert len(_json("alerts", "list", "--period", label)) == 4  # type: ignore[arg-type]
    assert _json("alerts", "list", "--period", "1999-01") == []
    text = runner.invoke(app, ["alerts", "list"])
    assert text.exit_code == 0 and "80%" in text.stdout and "cus_b" in text.stdout


def test_usage_shows_the_thresholds_fired() -> None:
    send(calls(9600), calls(60, metric="storage_gb"))
    document = _json("usage", "cus_a")
    assert isinstance(document, dict)
    assert document["metrics"]["api_calls"]["alerts_fired"] == ["0.8", "0.95"]
    assert document["metrics"]["storage_gb"]["alerts_fired"] == ["0.5"]
    assert document["metrics"]["logins"]["alerts_fired"] == []
    assert document["spend_alerts_fired"] == []
    text = runner.invoke(app, ["usage", "cus_a"])
    assert "alerts fired this period: api_calls 80%, 95%; storage_gb 50%" in " ".join(
        text.stdout.split()
    )


def test_overrides_beat_the_plan() -> None:
    rules = _json("alerts", "set", "cus_a", "--thresholds", "0.5,1")
    assert isinstance(rules, dict)
    assert [(r["metric"], r["threshold"]) for r in rules["rules"]] == [
        ("api_calls", "0.5"),
        ("api_calls", "1"),
        ("storage_gb", "0.5"),
        ("storage_gb", "1"),
    ]
    _json("alerts", "set", "cus_a", "--metric", "storage_gb", "--off")
    _json("alerts", "set", "cus_a", "--spend", "20.00")
    send(calls(25000), calls(100, metric="storage_gb"))
    assert fired() == [
        ("usage", "api_calls", D("0.5")),
        ("usage", "api_calls", D("1")),
        ("spend", None, D("20.00")),
    ]
    shown = _json("alerts", "show", "cus_a")
    assert isinstance(shown, dict)
    assert shown["overrides"] == {"usage": {"*": ["0.5", "1"], "storage_gb": []}, "spend": ["20"]}
    assert [r["fired"] for r in shown["rules"]] == [True, True, True]
    cleared = _json("alerts", "set", "cus_a", "--clear")
    assert isinstance(cleared, dict)
    assert [r["threshold"] for r in cleared["rules"]] == ["0.8", "0.95", "1", "0.5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thresholds", "0.5,abc"], "error: --thresholds: not a number: 'abc'"),
        (["--thresholds", "0"], "error: --thresholds: a share of included usage"),
        (["--thresholds", "0.5,0.5"], "error: --thresholds: a threshold is listed twice"),
        (["--thresholds", ""], "error: --thresholds: a comma-separated list"),
        (["--spend", "-5"], "error: --spend: an amount above 0"),
        (["--metric", "nope", "--off"], "error: --metric: 'nope' is not a metric of plan"),
        (["--metric", "api_calls", "--spend", "5"], "error: --metric: spend alerts are per plan"),
        (["--thresholds", "1", "--off"], "error: --off: give either --thresholds or --off"),
        (["--clear", "--off"], "error: --clear: clears overrides"),
        ([], "error: nothing to set"),
    ],
)
def test_bad_overrides_are_refused(run: Meter, args: list[str], message: str) -> None:
    assert_refused(run("alerts", "set", "cus_a", *args), message.removeprefix("error: "))
    assert fired() == [] and _json("alerts", "show", "cus_a")["overrides"] == {  # type: ignore[index]
        "usage": {},
        "spend": None,
    }


def test_unknown_customer_and_bad_period(run: Meter) -> None:
    assert_refused(run("alerts", "set", "nobody", "--off"), "customer_id: no customer 'nobody'")
    assert_refused(run("alerts", "list", "--period", "2026-13"), "period: no month 13")
