"""UsageRecorder: the ingest message on a real Redis broker, batching, re-sends, back-pressure.

A real RedisBroker (on the session's own Redis database, flushed around each test) where the
broker is the point; Dramatiq's StubBroker where it is not.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from tasks import producer as producer_module
from tasks.broker import INGEST_ACTOR, INGEST_QUEUE
from tasks.producer import configure_recorder, default_recorder, flush_usage, record_usage
from tasks.recorder import BufferFull, UsageRecorder

TIMESTAMP_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$")
NEVER = 3600.0  # a flush_interval that never elapses during a test


@pytest.fixture
def redis_broker(redis_client: redis.Redis, redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url)
    yield broker
    broker.close()


@pytest.fixture
def stub_broker() -> StubBroker:
    return StubBroker()


@pytest.fixture
def make_recorder() -> Iterator[Callable[..., UsageRecorder]]:
    """UsageRecorder factory; every recorder it made is closed after the test."""
    made: list[UsageRecorder] = []

    def make(broker: dramatiq.Broker, **kwargs: Any) -> UsageRecorder:
        recorder = UsageRecorder(broker, **kwargs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close(timeout=5)


def redis_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """The raw JSON of every message on the ingest queue, in queue order."""
    ids = client.lrange(f"dramatiq:{INGEST_QUEUE}", 0, -1)
    return [json.loads(client.hget(f"dramatiq:{INGEST_QUEUE}.msgs", i) or "null") for i in ids]


def stub_batches(broker: StubBroker) -> list[dict[str, Any]]:
    """Take the batches enqueued on a StubBroker's ingest queue, in order."""
    queue = broker.queues[INGEST_QUEUE]
    messages = [json.loads(queue.get_nowait()) for _ in range(queue.qsize())]
    return [m["args"][0] for m in messages]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_events_land_in_the_ingest_queue_as_the_documented_message(
    redis_client: redis.Redis,
    redis_broker: RedisBroker,
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    recorder = make_recorder(redis_broker, flush_interval=NEVER)
    before = datetime.now(UTC)
    auto_id = recorder.record("cus_42", "api_calls")
    after = datetime.now(UTC)
    given_id = recorder.record(
        "cus_42",
        "storage_gb",
        12.5,
        event_id="req-9f2",
        timestamp=datetime(2026, 11, 27, 15, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5))),
        properties={"region": "eu", "replicas": 3, "ratio": 0.25, "hot": True},
    )
    recorder.record("cus_7", "payments", Decimal("-3.000001"), event_id="pay-1")
    recorder.record("cus_7", "big", 10**18 - 1, event_id="big-1")
    assert recorder.flush(timeout=10)

    [message] = redis_messages(redis_client)
    assert message["queue_name"] == "ingest"
    assert message["actor_name"] == "ingest_events"
    assert message["kwargs"] == {}
    assert set(message["options"]) == {"redis_message_id"}
    assert isinstance(message["message_id"], str) and isinstance(message["message_timestamp"], int)
    [batch] = message["args"]
    assert set(batch) == {"batch_id", "events"}
    assert isinstance(batch["batch_id"], str) and batch["batch_id"]
    auto, given, payment, big = batch["events"]

    assert auto_id == auto["event_id"] and given_id == "req-9f2"
    assert set(auto) == {"event_id", "customer_id", "metric", "quantity", "timestamp", "properties"}
    assert (auto["customer_id"], auto["metric"], auto["quantity"]) == ("cus_42", "api_calls", "1")
    assert auto["properties"] == {}
    assert TIMESTAMP_FORMAT.match(auto["timestamp"]) and auto["timestamp"].endswith("+00:00")
    stamped = datetime.fromisoformat(auto["timestamp"])
    assert before - timedelta(microseconds=1) <= stamped <= after

    assert given == {
        "event_id": "req-9f2",
        "customer_id": "cus_42",
        "metric": "storage_gb",
        "quantity": "12.5",
        "timestamp": "2026-11-27T10:30:00.123456+00:00",  # the same instant, in UTC
        "properties": {"region": "eu", "replicas": 3, "ratio": 0.25, "hot": True},
    }
    assert payment["quantity"] == "-3.000001"
    assert big["quantity"] == "999999999999999999"


def test_a_message_decodes_as_a_dramatiq_message_for_the_ingest_actor(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker, flush_interval=NEVER)
    recorder.record("cus_1", "api_calls", 2)
    assert recorder.flush(timeout=10)
    message = dramatiq.Message.decode(stub_broker.queues[INGEST_QUEUE].get_nowait())
    assert (message.queue_name, message.actor_name) == (INGEST_QUEUE, INGEST_ACTOR)
    assert message.args[0]["events"][0]["quantity"] == "2"


def test_full_batches_go_by_size_and_the_remainder_on_flush(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker, batch_size=500, flush_interval=NEVER)
    ids = [recorder.record("cus_1", "api_calls", i) for i in range(1200)]

    # No flush() yet and the interval never elapses: only the two full batches go.
    assert wait_until(lambda: recorder.stats.sent_batches == 2)
    assert recorder.stats.buffered == 200
    assert recorder.flush(timeout=10)

    batches = stub_batches(stub_broker)
    assert [len(b["events"]) for b in batches] == [500, 500, 200]
    assert [e["event_id"] for b in batches for e in b["events"]] == ids
    assert [e["quantity"] for b in batches for e in b["events"]] == [str(i) for i in range(1200)]
    assert len({b["batch_id"] for b in batches}) == 3
    assert len(set(ids)) == 1200
    stats = recorder.stats
    assert (stats.recorded, stats.sent_events, stats.sent_batches, stats.buffered) == (
        1200,
        1200,
        3,
        0,
    )


def test_a_lone_event_is_sent_after_the_flush_interval_without_flush(
    redis_client: redis.Redis,
    redis_broker: RedisBroker,
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    recorder = make_recorder(redis_broker, flush_interval=0.05)
    event_id = recorder.record("cus_1", "api_calls")
    assert wait_until(lambda: len(redis_messages(redis_client)) == 1)
    [message] = redis_messages(redis_client)
    assert [e["event_id"] for e in message["args"][0]["events"]] == [event_id]


class FlakyRedisBroker(RedisBroker):
    """A real Redis broker whose first `failures` enqueues raise, as during an outage."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.attempts: list[dramatiq.Message[Any]] = []

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        self.attempts.append(message)
        if len(self.attempts) <= self.failures:
            raise redis.ConnectionError("Connection refused (injected)")
        return super().enqueue(message, delay=delay)


def test_a_batch_re_sent_after_broker_failures_keeps_its_ids_and_timestamps(
    redis_client: redis.Redis,
    redis_url: str,
    make_recorder: Callable[..., UsageRecorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FlakyRedisBroker(failures=2, url=redis_url)
    recorder = make_recorder(broker, flush_interval=NEVER)
    ids = [recorder.record("cus_1", "api_calls") for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="meterline.tasks.recorder"):
        assert recorder.flush(timeout=30)

    assert len(broker.attempts) == 3
    first = broker.attempts[0].args[0]
    assert [e["event_id"] for e in first["events"]] == ids
    for attempt in broker.attempts[1:]:
        assert attempt.args[0] == first  # same batch_id, same events, same timestamps
    [stored] = redis_messages(redis_client)
    assert stored["args"][0] == first
    assert recorder.stats.send_failures == 2
    assert recorder.stats.sent_events == 3
    failures = [r for r in caplog.records if r.name == "meterline.tasks.recorder"]
    assert len(failures) == 2 and "injected" in failures[0].getMessage()
    broker.close()


class BlockingBroker(StubBroker):
    """A StubBroker whose enqueue hangs until released, as a broker that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        self.released.wait()
        return super().enqueue(message, delay=delay)


def test_a_full_buffer_blocks_then_raises_buffer_full_and_drops_nothing(
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    broker = BlockingBroker()
    recorder = make_recorder(broker, max_buffer=10, block_timeout=0.2, flush_interval=NEVER)
    ids = [recorder.record("cus_1", "api_calls") for _ in range(10)]
    with pytest.raises(BufferFull, match=r"^buffer: 10 events"):
        recorder.record("cus_1", "api_calls", event_id="the-11th")
    assert recorder.stats.recorded == 10

    broker.released.set()
    assert recorder.flush(timeout=10)
    sent = [e["event_id"] for b in stub_batches(broker) for e in b["events"]]
    assert sent == ids  # the 11th was refused, not buffered; the first ten all went
    recorder.record("cus_1", "api_calls", event_id="after")  # room again
    assert recorder.flush(timeout=10)
    assert [e["event_id"] for b in stub_batches(broker) for e in b["events"]] == ["after"]


def test_a_record_waiting_for_room_proceeds_once_the_broker_answers(
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    broker = BlockingBroker()
    recorder = make_recorder(broker, max_buffer=5, block_timeout=60, flush_interval=NEVER)
    for _ in range(5):
        recorder.record("cus_1", "api_calls")
    threading.Timer(0.2, broker.released.set).start()
    recorder.record("cus_1", "api_calls", event_id="waited")  # blocks until the timer fires
    assert recorder.flush(timeout=10)
    sent = [e["event_id"] for b in stub_batches(broker) for e in b["events"]]
    assert len(sent) == 6 and sent[-1] == "waited"


def test_concurrent_threads_lose_and_duplicate_nothing(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker, batch_size=97, max_buffer=300, flush_interval=0.01)
    per_thread = 3000
    recorded: list[list[str]] = [[] for _ in range(4)]

    def work(ids: list[str]) -> None:
        ids.extend(recorder.record("cus_1", "api_calls") for _ in range(per_thread))

    threads = [threading.Thread(target=work, args=(ids,)) for ids in recorded]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.flush(timeout=30)
    sent = [e["event_id"] for b in stub_batches(stub_broker) for e in b["events"]]
    assert sorted(sent) == sorted(i for ids in recorded for i in ids)
    assert len(set(sent)) == 4 * per_thread
    assert recorder.stats.recorded == recorder.stats.sent_events == 4 * per_thread


def test_properties_are_copied_at_record_time(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker, flush_interval=NEVER)
    properties: dict[str, Any] = {"region": "eu"}
    recorder.record("cus_1", "api_calls", properties=properties)
    properties["region"] = "us"
    assert recorder.flush(timeout=10)
    [batch] = stub_batches(stub_broker)
    assert batch["events"][0]["properties"] == {"region": "eu"}


def test_close_sends_what_is_buffered_and_refuses_later_records(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker, flush_interval=NEVER)
    recorder.record("cus_1", "api_calls", event_id="last")
    assert recorder.close(timeout=10)
    assert [e["event_id"] for b in stub_batches(stub_broker) for e in b["events"]] == ["last"]
    with pytest.raises(RuntimeError, match="closed"):
        recorder.record("cus_1", "api_calls")
    assert recorder.stats.recorded == 1


def test_flush_on_an_idle_recorder_returns_at_once(
    stub_broker: StubBroker, make_recorder: Callable[..., UsageRecorder]
) -> None:
    recorder = make_recorder(stub_broker)
    assert recorder.flush(timeout=1)
    assert INGEST_QUEUE not in stub_broker.queues  # nothing was sent, nothing declared


def test_module_functions_use_the_configured_default_recorder(
    stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "_default", None)
    first = configure_recorder(broker=stub_broker, flush_interval=NEVER)
    assert default_recorder() is first
    event_id = record_usage("cus_42", "storage_gb", 12.5, properties={"region": "eu"})
    assert flush_usage(timeout=10)
    [batch] = stub_batches(stub_broker)
    assert batch["events"][0]["event_id"] == event_id
    assert batch["events"][0]["quantity"] == "12.5"

    record_usage("cus_42", "api_calls", event_id="before-replace")
    second = configure_recorder(broker=stub_broker, flush_interval=NEVER)
    assert default_recorder() is second
    # The replaced recorder was closed after sending what it held.
    assert [e["event_id"] for b in stub_batches(stub_broker) for e in b["events"]] == [
        "before-replace"
    ]
    with pytest.raises(RuntimeError):
        first.record("cus_42", "api_calls")
    second.close(timeout=10)


def test_a_partial_batch_is_held_while_the_queue_has_untaken_batches_then_goes_as_one(
    redis_client: redis.Redis,
    redis_broker: RedisBroker,
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    recorder = make_recorder(redis_broker, flush_interval=0.05, max_hold=1.0)
    first = recorder.record("cus_1", "api_calls")
    # The queue is empty: the partial batch goes at the interval, not held.
    assert wait_until(lambda: len(redis_messages(redis_client)) == 1, timeout=0.5)
    # No worker takes it: the next events are held together, past many intervals...
    held = [recorder.record("cus_1", "api_calls", i) for i in range(3)]
    time.sleep(0.3)
    held.append(recorder.record("cus_1", "api_calls"))
    time.sleep(0.3)
    assert len(redis_messages(redis_client)) == 1
    assert recorder.stats.buffered == 4
    # ... until max_hold has passed since the first tick that held them: then as one batch.
    assert wait_until(lambda: len(redis_messages(redis_client)) == 2, timeout=2.0)
    batches = [m["args"][0]["events"] for m in redis_messages(redis_client)]
    assert [[e["event_id"] for e in b] for b in batches] == [[first], held]


def test_flush_and_full_batches_never_wait_for_the_backlog(
    redis_client: redis.Redis,
    redis_broker: RedisBroker,
    make_recorder: Callable[..., UsageRecorder],
) -> None:
    recorder = make_recorder(redis_broker, batch_size=3, flush_interval=0.05, max_hold=NEVER)
    recorder.record("cus_1", "api_calls")
    assert recorder.flush(timeout=5)  # the queue now holds a batch no worker takes
    [recorder.record("cus_1", "api_calls") for _ in range(4)]
    assert wait_until(lambda: len(redis_messages(redis_client)) == 2, timeout=1.0)  # the full one
    time.sleep(0.2)
    assert recorder.stats.buffered == 1  # the partial one is held (max_hold never elapses)
    started = time.monotonic()
    assert recorder.flush(timeout=5)
    assert time.monotonic() - started < 1.0
    assert [len(m["args"][0]["events"]) for m in redis_messages(redis_client)] == [1, 3, 1]
