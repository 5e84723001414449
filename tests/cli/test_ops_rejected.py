"""`meter ops rejected`: the events ingest refused, newest first, with reason and detail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import output
from cli.main import app
from services.ingest import ingest_batch
from tests.metering.helpers import event, setup_customer

runner = CliRunner()


@pytest.fixture(autouse=True)
def rejections(clean_state: None) -> None:
    setup_customer("cus_1")
    setup_customer("cus_2")
    now = datetime.now(UTC)
    ingest_batch("b1", [event("nope", event_id="m1"), event(customer_id="ghost", event_id="g1")])
    ingest_batch("b2", [event(customer_id="cus_2", event_id="f1", at=now + timedelta(days=1))])
    ingest_batch("b3", [event("nope", customer_id="cus_2", event_id="m2"), event(event_id="ok")])


def rejected(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["ops", "rejected", "--json", *args])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


def test_lists_every_rejection_newest_first_with_reason_and_detail() -> None:
    found = rejected()
    assert [r["event_id"] for r in found] == ["m2", "f1", "g1", "m1"]
    latest = found[0]
    assert latest["reason"] == "unknown_metric"
    assert "nope" in latest["detail"]
    assert (latest["customer_id"], latest["metric"], latest["batch_id"]) == ("cus_2", "nope", "b3")
    assert latest["payload"]["event_id"] == "m2"
    datetime.fromisoformat(latest["received_at"])
    assert found[1]["reason"] == "timestamp_out_of_window"
    assert found[2]["reason"] == "unknown_customer" and "ghost" in found[2]["detail"]


def test_filters_by_reason_and_customer_and_limits() -> None:
    assert [r["event_id"] for r in rejected("--reason", "unknown_metric")] == ["m2", "m1"]
    assert [r["event_id"] for r in rejected("--customer", "cus_2")] == ["m2", "f1"]
    both = rejected("--reason", "unknown_metric", "--customer", "cus_1")
    assert [r["event_id"] for r in both] == ["m1"]
    assert [r["event_id"] for r in rejected("--limit", "2")] == ["m2", "f1"]
    assert rejected("--reason", "no_such_reason") == []


def test_the_table_names_each_rejection_and_says_when_more_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(output.console, "width", 200)  # one line per row, whole words
    result = runner.invoke(app, ["ops", "rejected", "--limit", "4"])
    assert result.exit_code == 0, result.output
    for text in ("unknown_metric", "unknown_customer", "timestamp_out_of_window", "ghost"):
        assert text in result.output
    assert "--limit shows more" in result.output


def test_a_limit_below_one_is_refused() -> None:
    result = runner.invoke(app, ["ops", "rejected", "--limit", "0"])
    assert result.exit_code != 0
    assert "--limit" in result.output
