"""UsageRecorder.record validates in the caller: a bad event raises, names its field, and never
reaches the buffer; every accepted shape is written in the documented message format."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from tasks.broker import INGEST_QUEUE
from tasks.recorder import UsageRecorder


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker()


@pytest.fixture
def recorder(broker: StubBroker) -> Iterator[UsageRecorder]:
    recorder = UsageRecorder(broker, flush_interval=3600)
    yield recorder
    recorder.close(timeout=5)


def sent_events(recorder: UsageRecorder, broker: StubBroker) -> list[dict[str, Any]]:
    assert recorder.flush(timeout=10)
    if INGEST_QUEUE not in broker.queues:
        return []
    queue = broker.queues[INGEST_QUEUE]
    messages = [json.loads(queue.get_nowait()) for _ in range(queue.qsize())]
    return [e for m in messages for e in m["args"][0]["events"]]


NAIVE = datetime(2026, 11, 27, 10, 0)
VALID: dict[str, Any] = {"customer_id": "cus_1", "metric": "api_calls"}

INVALID: list[tuple[dict[str, Any], str]] = [
    ({"customer_id": ""}, "customer_id"),
    ({"customer_id": "c" * 129}, "customer_id"),
    ({"customer_id": 42}, "customer_id"),
    ({"customer_id": None}, "customer_id"),
    ({"metric": ""}, "metric"),
    ({"metric": b"api_calls"}, "metric"),
    ({"metric": "m" * 129}, "metric"),
    ({"event_id": ""}, "event_id"),
    ({"event_id": "e" * 129}, "event_id"),
    ({"event_id": 7}, "event_id"),
    ({"quantity": True}, "quantity"),
    ({"quantity": float("nan")}, "quantity"),
    ({"quantity": float("inf")}, "quantity"),
    ({"quantity": float("-inf")}, "quantity"),
    ({"quantity": Decimal("NaN")}, "quantity"),
    ({"quantity": Decimal("sNaN")}, "quantity"),
    ({"quantity": Decimal("Infinity")}, "quantity"),
    ({"quantity": 10**18}, "quantity"),
    ({"quantity": -(10**18)}, "quantity"),
    ({"quantity": 1e18}, "quantity"),
    ({"quantity": Decimal("1E+18")}, "quantity"),
    ({"quantity": Decimal("0.0000001")}, "quantity"),
    ({"quantity": Decimal("1.1234567")}, "quantity"),
    ({"quantity": 1 / 3}, "quantity"),
    ({"quantity": "1"}, "quantity"),
    ({"quantity": None}, "quantity"),
    ({"timestamp": NAIVE}, "timestamp"),
    ({"timestamp": date(2026, 11, 27)}, "timestamp"),
    ({"timestamp": "2026-11-27T10:00:00+00:00"}, "timestamp"),
    ({"timestamp": 1764237600}, "timestamp"),
    (
        {"timestamp": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))},
        "timestamp",
    ),
    ({"properties": [("region", "eu")]}, "properties"),
    ({"properties": "region=eu"}, "properties"),
    ({"properties": {f"k{i}": i for i in range(51)}}, "properties"),
    ({"properties": {"": "x"}}, "properties"),
    ({"properties": {"k" * 65: "x"}}, "properties"),
    ({"properties": {1: "x"}}, "properties"),
    ({"properties": {"region": "x" * 513}}, "properties"),
    ({"properties": {"ratio": float("nan")}}, "properties"),
    ({"properties": {"ratio": float("inf")}}, "properties"),
    ({"properties": {"amount": Decimal("NaN")}}, "properties"),
    ({"properties": {"tags": ["a", "b"]}}, "properties"),
    ({"properties": {"nested": {"a": 1}}}, "properties"),
    ({"properties": {"missing": None}}, "properties"),
    # What PostgreSQL, Redis or the worker's arithmetic cannot take (the worker would reject it).
    ({"customer_id": "cus\x00_1"}, "customer_id"),
    ({"metric": "api\x00calls"}, "metric"),
    ({"event_id": "\x00"}, "event_id"),
    ({"customer_id": "cus_\ud800"}, "customer_id"),
    ({"metric": "\udfff"}, "metric"),
    ({"event_id": "e-\udc80"}, "event_id"),
    ({"properties": {"note": "x\x00y"}}, "properties"),
    ({"properties": {"k\x00": "v"}}, "properties"),
    ({"properties": {"note": "\ud800"}}, "properties"),
    ({"properties": {"\udc00": 1}}, "properties"),
    ({"properties": {"amount": Decimal("1e999999999")}}, "properties"),
    ({"properties": {"n": 10**600}}, "properties"),
    ({"quantity": Decimal("1e999999999")}, "quantity"),
    ({"quantity": Decimal("-1e999999999")}, "quantity"),
    ({"quantity": Decimal("1e-999999999")}, "quantity"),
    ({"quantity": 10**4000}, "quantity"),
    ({"customer_id": 10**4000}, "customer_id"),
    (
        {"timestamp": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))},
        "timestamp",
    ),
    ({"timestamp": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}, "timestamp"),
]


@pytest.mark.parametrize(("change", "field"), INVALID, ids=lambda v: repr(v)[:60])
def test_invalid_input_raises_naming_the_field_and_buffers_nothing(
    recorder: UsageRecorder, broker: StubBroker, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}(: |\.\w+: )"):
        recorder.record(**{**VALID, **change})
    assert recorder.stats.recorded == 0
    assert sent_events(recorder, broker) == []


def test_the_message_says_what_is_wrong(recorder: UsageRecorder) -> None:
    with pytest.raises(ValueError, match=r"^quantity: must be a finite number, got nan$"):
        recorder.record("cus_1", "api_calls", float("nan"))
    with pytest.raises(ValueError, match=r"^timestamp: must include a UTC offset .*, got 2026"):
        recorder.record("cus_1", "api_calls", timestamp=NAIVE)


def test_a_bad_event_among_good_ones_is_the_only_one_refused(
    recorder: UsageRecorder, broker: StubBroker
) -> None:
    recorder.record("cus_1", "api_calls", event_id="good-1")
    with pytest.raises(ValueError):
        recorder.record("cus_1", "api_calls", float("inf"), event_id="bad")
    recorder.record("cus_1", "api_calls", event_id="good-2")
    assert [e["event_id"] for e in sent_events(recorder, broker)] == ["good-1", "good-2"]


class Metric(enum.StrEnum):
    API_CALLS = "api_calls"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("quantity", "written"),
    [
        (1, "1"),
        (0, "0"),
        (-5, "-5"),
        (10**18 - 1, "999999999999999999"),
        (Level.HIGH, "3"),
        (12.5, "12.5"),
        (0.1, "0.1"),
        (1e-06, "0.000001"),
        (1e17, "100000000000000000"),
        (-2.75, "-2.75"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("1.5000000"), "1.500000"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-999999999999999999.999999"), "-999999999999999999.999999"),
    ],
)
def test_accepted_quantities_are_written_as_plain_decimal_strings(
    recorder: UsageRecorder, broker: StubBroker, quantity: Any, written: str
) -> None:
    recorder.record("cus_1", "api_calls", quantity)
    [event] = sent_events(recorder, broker)
    assert event["quantity"] == written
    assert Decimal(written) == Decimal(str(quantity)) or isinstance(quantity, enum.Enum)


def test_str_and_int_subclasses_are_sent_as_their_plain_values(
    recorder: UsageRecorder, broker: StubBroker
) -> None:
    recorder.record(
        "cus_1",
        Metric.API_CALLS,
        event_id="e-1",
        properties={"tier": Metric.API_CALLS, "level": Level.HIGH},
    )
    [event] = sent_events(recorder, broker)
    assert event["metric"] == "api_calls"
    assert event["properties"] == {"tier": "api_calls", "level": 3}


def test_limits_are_inclusive(recorder: UsageRecorder, broker: StubBroker) -> None:
    properties: dict[str, Any] = {f"k{i:02}": i for i in range(49)}
    properties["k" * 64] = "v" * 512
    recorder.record("c" * 128, "m" * 128, event_id="e" * 128, properties=properties)
    [event] = sent_events(recorder, broker)
    assert (event["customer_id"], event["metric"], event["event_id"]) == (
        "c" * 128,
        "m" * 128,
        "e" * 128,
    )
    assert event["properties"] == properties


def test_property_values_keep_their_json_types_and_decimals_stay_exact(
    recorder: UsageRecorder, broker: StubBroker
) -> None:
    recorder.record(
        "cus_1",
        "payments",
        properties={
            "region": "eu",
            "n": 3,
            "ratio": 0.5,
            "paid": False,
            "amount": Decimal("12.50"),
        },
    )
    [event] = sent_events(recorder, broker)
    assert event["properties"] == {
        "region": "eu",
        "n": 3,
        "ratio": 0.5,
        "paid": False,
        "amount": "12.50",
    }


def test_aware_timestamps_are_sent_as_the_same_instant_in_utc(
    recorder: UsageRecorder, broker: StubBroker
) -> None:
    tokyo = timezone(timedelta(hours=9))
    recorder.record("cus_1", "api_calls", timestamp=datetime(2026, 11, 1, 8, 0, tzinfo=tokyo))
    recorder.record("cus_1", "api_calls", timestamp=datetime(2026, 11, 1, 0, 0, 0, 7, tzinfo=UTC))
    first, second = sent_events(recorder, broker)
    assert first["timestamp"] == "2026-10-31T23:00:00.000000+00:00"
    assert second["timestamp"] == "2026-11-01T00:00:00.000007+00:00"
