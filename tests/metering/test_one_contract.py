"""One event contract: the same malformed event, given to the producer (`UsageRecorder.record`),
to the CLI (`meter events import` and `meter events send`) and to the worker (the ingest actor),
is refused by each with the same field and the same reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from typer.testing import CliRunner

from cli.main import app
from tasks.ingest import ingest_events
from tasks.recorder import UsageRecorder
from tests.metering.helpers import assert_consistent, batch, event, setup_customer
from tests.metering.test_bad_events import over_the_wire

NAIVE = "2026-11-27T10:00:00"
LAST = "9999-12-31T23:59:59-14:00"
MANY = {f"k{i}": i for i in range(51)}

# (the field as JSON carries it, the same as a Python producer passes it, field, reason);
# the CLI's `send` options are the JSON values as text.
CASES: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    ({"quantity": "1e999999999"}, {"quantity": Decimal("1e999999999")}, "quantity",
     "must be less than 10^18 in absolute value"),
    ({"quantity": 10**18}, {"quantity": 10**18}, "quantity",
     "must be less than 10^18 in absolute value"),
    ({"quantity": "0.0000001"}, {"quantity": Decimal("0.0000001")}, "quantity",
     "at most 6 decimal places"),
    ({"quantity": "NaN"}, {"quantity": Decimal("NaN")}, "quantity", "must be a finite number"),
    ({"quantity": True}, {"quantity": True}, "quantity", "must be a number, not a boolean"),
    ({"customer_id": ""}, {"customer_id": ""}, "customer_id",
     "must be a string of 1 to 128 characters"),
    ({"metric": "m" * 129}, {"metric": "m" * 129}, "metric",
     "must be a string of 1 to 128 characters"),
    ({"metric": "api\x00calls"}, {"metric": "api\x00calls"}, "metric",
     "must not contain NUL (\\u0000)"),
    ({"event_id": "e-\ud800"}, {"event_id": "e-\ud800"}, "event_id",
     "must not contain a lone surrogate"),
    ({"timestamp": NAIVE}, {"timestamp": datetime.fromisoformat(NAIVE)}, "timestamp",
     "must include a UTC offset"),
    ({"timestamp": LAST}, {"timestamp": datetime.fromisoformat(LAST)}, "timestamp",
     f"{LAST} cannot be converted to UTC"),
    ({"properties": {"note": "x" * 513}}, {"properties": {"note": "x" * 513}},
     "properties.note", "at most 512 characters"),
    ({"properties": {"k" * 65: 1}}, {"properties": {"k" * 65: 1}}, "properties",
     "a key must be a string of 1 to 64 characters"),
    ({"properties": MANY}, {"properties": MANY}, "properties", "at most 50 keys, got 51"),
    ({"properties": {"ratio": float("nan")}}, {"properties": {"ratio": float("nan")}},
     "properties.ratio", "must be a finite number"),
    ({"properties": {"n": 10**600}}, {"properties": {"n": 10**600}}, "properties.n",
     "a number of at most 512 digits"),
    ({"properties": {"tags": ["a"]}}, {"properties": {"tags": ["a"]}}, "properties.tags",
     "must be a string, number or boolean"),
    ({"properties": ["a"]}, {"properties": ["a"]}, "properties",
     "must be an object of names to values"),
]  # fmt: skip

SEND_OPTIONS = {"customer_id": "--customer", "metric": "--metric", "quantity": "--quantity",
                "event_id": "--id", "properties": "--properties"}  # fmt: skip


def producer_refusal(python: dict[str, Any]) -> str:
    recorder = UsageRecorder(StubBroker(), flush_interval=3600)
    try:
        with pytest.raises(ValueError) as refused:
            recorder.record(**{"customer_id": "cus_1", "metric": "api_calls", **python})
        assert recorder.stats.recorded == 0
    finally:
        recorder.close(timeout=5)
    return str(refused.value)


def import_refusal(wire: dict[str, Any], tmp_path: Path) -> str:
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps({**event(), **wire}) + "\n")
    result = CliRunner().invoke(app, ["events", "import", str(file)])
    assert result.exit_code == 1, result.output
    where = f"{file}:1: "
    message = str(result.exception)
    assert message.startswith(where), message
    return message.removeprefix(where)


def send_refusal(wire: dict[str, Any]) -> str | None:
    """What `meter events send` says, with the option put back as the field; None when the
    field has no option (the timestamp option is read as an option, before the contract)."""
    [(field, value)] = wire.items()
    if field not in SEND_OPTIONS or isinstance(value, bool):  # an option's value is text
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    args = {"--customer": "cus_1", "--metric": "api_calls", SEND_OPTIONS[field]: text}
    result = CliRunner().invoke(app, ["events", "send", *(p for a in args.items() for p in a)])
    assert result.exit_code == 1, result.output
    message = str(result.exception)
    assert message.startswith(SEND_OPTIONS[field]), message
    return field + message.removeprefix(SEND_OPTIONS[field])


def worker_refusal(wire: dict[str, Any], db: Any) -> str:
    setup_customer()
    ingest_events(over_the_wire(batch([event(quantity=2), {**event(), **wire}])))
    [(reason, detail)] = db.execute("SELECT reason, detail FROM rejected_events").fetchall()
    assert reason == "invalid_event"
    assert assert_consistent()["api_calls"] == 2  # the valid event beside it is counted
    return str(detail)


@pytest.mark.parametrize(("wire", "python", "field", "reason"), CASES, ids=lambda v: repr(v)[:40])
def test_producer_cli_and_worker_give_the_same_field_and_reason(
    db: Any, tmp_path: Path, wire: dict[str, Any], python: dict[str, Any], field: str, reason: str
) -> None:
    expected = f"{field}: {reason}"
    refusals = {
        "producer": producer_refusal(python),
        "events import": import_refusal(wire, tmp_path),
        "worker": worker_refusal(wire, db),
    }
    sent = send_refusal(wire)
    if sent is not None:
        refusals["events send"] = sent
    for where, message in refusals.items():
        assert message.startswith(expected), (where, message)


def test_the_table_covers_every_field_of_the_contract() -> None:
    from pricing.events import EVENT_KEYS

    assert {field.split(".")[0] for _, _, field, _ in CASES} == set(EVENT_KEYS)


def test_a_valid_event_is_accepted_by_all_three(db: Any, tmp_path: Path) -> None:
    """The other side of the table: what none refuses (the worker's reason is the rules')."""
    at = datetime(2026, 11, 27, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    python = {"quantity": Decimal("2.5"), "timestamp": at, "properties": {"region": "eu"}}
    wire = {"quantity": "2.5", "timestamp": at.isoformat(), "properties": {"region": "eu"}}
    recorder = UsageRecorder(StubBroker(), flush_interval=3600)
    recorder.record("cus_1", "api_calls", **python)
    recorder.close(timeout=5)
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps({**event(), **wire}) + "\n")
    from cli.inputs import read_event_lines

    [(_, _, decoded)] = read_event_lines(file, now=datetime.now(UTC))
    assert decoded.timestamp == at and decoded.quantity == Decimal("2.5")
    ingest_events(over_the_wire(batch([{**event(), **wire}])))
    [(reason,)] = db.execute("SELECT reason FROM rejected_events").fetchall()
    assert reason == "unknown_customer"  # past the contract: refused by the ingest rules
