"""`meter events send|import`, `meter usage --json` and `meter ops stats --json`: through the
same queue path as `record_usage`, and the JSON shapes CONTRACTS.md promises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from typer.testing import CliRunner

from cli.main import app
from tasks import configure_recorder
from tasks.broker import INGEST_QUEUE
from tasks.ingest import ingest_events
from tests.metering.helpers import assert_consistent, setup_customer

runner = CliRunner()


@pytest.fixture
def queue(clean_state: None) -> Iterator[StubBroker]:
    """The default recorder sends to a stub broker whose queue the test drains by hand."""
    setup_customer()
    broker = StubBroker()
    broker.declare_queue(INGEST_QUEUE)
    configure_recorder(broker=broker, flush_interval=0.01)
    yield broker
    configure_recorder()


def drain(broker: StubBroker) -> int:
    """Run every queued batch through the ingest actor; the number of events."""
    count = 0
    queue = broker.queues[INGEST_QUEUE]
    while not queue.empty():
        message = json.loads(queue.get_nowait())
        ingest_events(*message["args"])
        count += len(message["args"][0]["events"])
    return count


def test_events_send_goes_through_the_queue(queue: StubBroker) -> None:
    result = runner.invoke(
        app,
        ["events", "send", "--customer", "cus_1", "--metric", "api_calls", "--quantity", "2.5",
         "--id", "cli-1", "--properties", '{"region": "eu"}', "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"event_id": "cli-1", "queued": 1}
    assert drain(queue) == 1
    quantities = assert_consistent()
    assert (quantities["api_calls"], quantities["eu_calls"]) == (2.5, 2.5)


def test_events_import_queues_every_line(queue: StubBroker, tmp_path: Path) -> None:
    lines = [
        {"customer_id": "cus_1", "metric": "api_calls", "quantity": "3"},
        {"customer_id": "cus_1", "metric": "storage", "quantity": 7, "event_id": "s1"},
        {"customer_id": "cus_1", "metric": "login", "properties": {"user_id": "ann"}},
    ]
    file = tmp_path / "events.jsonl"
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = runner.invoke(app, ["events", "import", str(file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"queued": 3}
    assert drain(queue) == 3
    quantities = assert_consistent()
    assert (quantities["api_calls"], quantities["peak_gb"], quantities["seats"]) == (3, 7, 1)


def test_a_bad_line_stops_the_import_before_anything_is_queued(
    queue: StubBroker, tmp_path: Path
) -> None:
    file = tmp_path / "events.jsonl"
    good = json.dumps({"customer_id": "cus_1", "metric": "api_calls"})
    file.write_text(
        good + "\n" + json.dumps({"customer_id": "cus_1", "metric": "x", "quantity": "NaN"})
    )
    result = runner.invoke(app, ["events", "import", str(file)])
    assert result.exit_code == 1  # `meter` prints the error on stderr (cli.main.main)
    assert "events.jsonl:2: quantity" in str(result.exception)
    assert drain(queue) == 0


def test_usage_and_stats_json_have_the_contract_shape(queue: StubBroker) -> None:
    runner.invoke(app, ["events", "send", "--customer", "cus_1", "--metric", "api_calls",
                        "--quantity", "150"])  # fmt: skip
    drain(queue)
    usage = json.loads(runner.invoke(app, ["usage", "cus_1", "--json"]).output)
    assert set(usage) >= {"customer_id", "plan", "currency", "period_start", "period_end",
                          "metrics", "estimated_total", "as_of"}  # fmt: skip
    assert usage["metrics"]["api_calls"] == {
        "used": "150", "included": "100", "overage": "50", "estimated_cost": "0.50",
        "alerts_fired": ["0.8", "0.95", "1"],  # added by issue 10 (alerts)
    }  # fmt: skip
    assert usage["spend_alerts_fired"] == []
    stats = json.loads(runner.invoke(app, ["ops", "stats", "--json"]).stdout)
    assert stats["events"] == {"accepted": 1, "duplicates": 0, "rejected": {}}
    assert set(stats["queues"]) >= {"ingest", "billing", "dead"}
    assert isinstance(stats["oldest_message_age_s"], float)
