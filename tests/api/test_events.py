"""`POST /v1/events`: screened with the ingest rules, queued through the recorder, each event's
status in the answer; what was accepted is counted exactly once."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from services.usage import current_usage
from tests.api.conftest import Headers, event


def used(customer_id: str, metric: str = "api_calls") -> Decimal:
    return current_usage(customer_id).metrics[metric].used


def test_a_batch_is_queued_and_counted_exactly(
    client: TestClient,
    key_for: Callable[[str], Headers],
    ingest_queued: Callable[[], int],
) -> None:
    batch = [event(event_id=f"e{i}", quantity=str(i)) for i in range(1, 101)]
    answer = client.post("/v1/events", json={"events": batch}, headers=key_for("ingest"))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 100 and body["rejected"] == 0
    assert [e["status"] for e in body["events"]] == ["accepted"] * 100
    assert [e["event_id"] for e in body["events"]] == [f"e{i}" for i in range(1, 101)]
    assert ingest_queued() >= 1  # 202 means queued: it is in the broker already
    assert used("cus_a") == sum(range(1, 101))


def test_each_event_gets_its_status_and_bad_ones_name_their_field(
    client: TestClient,
    key_for: Callable[[str], Headers],
    ingest_queued: Callable[[], int],
) -> None:
    batch: list[Any] = [
        event(event_id="good", quantity="2"),
        event(event_id="nan", quantity="NaN"),
        event("cus_nobody", event_id="who"),
        {"customer_id": "cus_a", "metric": "no_such_metric", "event_id": "what"},
        "not an event",
        event(event_id="extra", colour="blue"),
        event(event_id="good2", quantity=3),
    ]
    answer = client.post("/v1/events", json=batch, headers=key_for("ingest"))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 5)
    statuses = {e["index"]: e for e in body["events"]}
    assert [statuses[i]["status"] for i in range(7)] == [
        "accepted", "rejected", "rejected", "rejected", "rejected", "rejected", "accepted",
    ]  # fmt: skip
    assert statuses[1]["error"]["field"] == "quantity"
    assert statuses[2]["code"] == "unknown_customer"
    assert statuses[2]["error"]["field"] == "customer_id"
    assert statuses[3]["code"] == "unknown_metric"
    assert statuses[4]["error"]["field"] == "event"
    assert statuses[5]["error"] == {"field": "colour", "reason": "unknown key"}
    ingest_queued()
    assert used("cus_a") == 5


def test_nothing_accepted_is_422(client: TestClient, key_for: Callable[[str], Headers]) -> None:
    answer = client.post(
        "/v1/events", json=[event(quantity="x"), event("cus_nobody")], headers=key_for("ingest")
    )
    assert answer.status_code == 422
    assert answer.json()["accepted"] == 0
    assert [e["status"] for e in answer.json()["events"]] == ["rejected", "rejected"]


def test_sending_again_with_the_same_ids_counts_once(
    client: TestClient,
    key_for: Callable[[str], Headers],
    ingest_queued: Callable[[], int],
) -> None:
    headers = key_for("ingest")
    batch = [event(event_id=f"r{i}", quantity="5") for i in range(10)]
    for _ in range(3):
        assert client.post("/v1/events", json=batch, headers=headers).status_code == 202
        ingest_queued()
    assert used("cus_a") == 50


def test_one_event_and_defaults(
    client: TestClient,
    key_for: Callable[[str], Headers],
    ingest_queued: Callable[[], int],
) -> None:
    answer = client.post("/v1/events", json=event("cus_b"), headers=key_for("ops"))
    assert answer.status_code == 202, answer.text
    (status,) = answer.json()["events"]
    assert status["status"] == "accepted" and status["event_id"]  # an id was assigned
    ingest_queued()
    assert used("cus_b") == 1


def test_bodies_that_hold_no_events(client: TestClient, key_for: Callable[[str], Headers]) -> None:
    headers = key_for("ingest")
    for content, field in (
        (b"{not json", "body"),
        (b"42", "body"),
        (b"[]", "events"),
        (b'{"events": []}', "events"),
    ):
        answer = client.post("/v1/events", content=content, headers=headers)
        assert answer.status_code == 422, content
        assert answer.json()["error"]["field"] == field


def test_at_most_10000_events(client: TestClient, key_for: Callable[[str], Headers]) -> None:
    answer = client.post(
        "/v1/events", json=[event(event_id=str(i)) for i in range(10_001)], headers=key_for("ops")
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == {
        "field": "events",
        "reason": "at most 10000 per request, got 10001",
    }


def test_body_size_limit_declared_and_streamed(
    stub_broker: object,
    key_for: Callable[[str], Headers],
    env_setting: Callable[[str, str], None],
) -> None:
    from api.app import create_app

    env_setting("METER_API_MAX_BODY_BYTES", "2048")
    headers = key_for("ingest")
    big = [event(event_id=f"big-{i}") for i in range(100)]
    with TestClient(create_app(start_broker=False)) as small:
        declared = small.post("/v1/events", json=big, headers=headers)
        assert declared.status_code == 413
        assert declared.json()["error"]["field"] == "body"

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        streamed = small.post("/v1/events", content=chunks(), headers=headers)
        assert streamed.status_code == 413
        assert small.post("/v1/events", json=big[:2], headers=headers).status_code == 202


def test_a_repeat_within_a_request_is_a_duplicate_counted_once(
    client: TestClient,
    key_for: Callable[[str], Headers],
    ingest_queued: Callable[[], int],
) -> None:
    batch = [event(event_id="same", quantity="4"), event(event_id="same", quantity="4")]
    answer = client.post("/v1/events", json=batch, headers=key_for("ingest"))
    assert answer.status_code == 202
    assert [e["status"] for e in answer.json()["events"]] == ["accepted", "duplicate"]
    ingest_queued()
    assert used("cus_a") == 4
