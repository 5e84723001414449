"""The recorder across process boundaries — fork (gunicorn workers), interpreter exit — and the
broker set-up it gets by default, against a real Redis (the session's own database)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from pricing.errors import ConfigError
from storage.settings import reset_settings
from tasks import broker as broker_module
from tasks.broker import INGEST_QUEUE, get_broker, make_broker
from tasks.recorder import UsageRecorder

REPO_ROOT = Path(__file__).resolve().parents[2]


def queued_events(client: redis.Redis) -> list[dict[str, Any]]:
    ids = client.lrange(f"dramatiq:{INGEST_QUEUE}", 0, -1)
    messages = [json.loads(client.hget(f"dramatiq:{INGEST_QUEUE}.msgs", i) or "null") for i in ids]
    return [e for m in messages for e in m["args"][0]["events"]]


def test_a_forked_child_records_with_its_own_buffer_ids_and_thread(
    redis_client: redis.Redis, redis_url: str
) -> None:
    broker = RedisBroker(url=redis_url)
    recorder = UsageRecorder(broker, flush_interval=3600)
    parent_ids = [recorder.record("cus_parent", "api_calls") for _ in range(5)]  # still buffered

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            for _ in range(7):
                recorder.record("cus_child", "api_calls")
            code = 0 if recorder.flush(timeout=20) and recorder.stats.sent_events == 7 else 2
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert recorder.flush(timeout=20)
    recorder.close(timeout=5)
    broker.close()

    events = queued_events(redis_client)
    child = [e["event_id"] for e in events if e["customer_id"] == "cus_child"]
    parent = [e["event_id"] for e in events if e["customer_id"] == "cus_parent"]
    assert len(events) == 12  # the child did not inherit (and re-send) the parent's buffer
    assert parent == parent_ids
    assert len(child) == 7 and len(set(child)) == 7
    parent_prefix = parent_ids[0].rsplit("-", 1)[0]
    assert all(not i.startswith(parent_prefix) for i in child)  # a new prefix after fork


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "REDIS_URL")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_buffered_at_interpreter_exit_are_sent(
    redis_client: redis.Redis, redis_url: str
) -> None:
    result = run_python(
        """
        from tasks.producer import configure_recorder, record_usage
        configure_recorder(flush_interval=3600)  # only the exit can send them
        for i in range(10):
            record_usage("cus_exit", "api_calls", i)
        """,
        REDIS_URL=redis_url,
    )
    assert result.returncode == 0, result.stderr
    events = queued_events(redis_client)
    assert [e["quantity"] for e in events] == [str(i) for i in range(10)]
    assert {e["customer_id"] for e in events} == {"cus_exit"}


@pytest.fixture
def fresh_broker_setup(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[None]:
    """get_broker() and the settings start from scratch; Dramatiq's global broker, and the
    actors on it, are restored."""
    previous = dramatiq.broker.global_broker
    monkeypatch.setattr(broker_module, "_broker", None)
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    reset_settings()
    yield
    reset_settings()
    assert previous is not None
    broker_module.install(previous)  # moves the actors back from the broker the test made


def test_get_broker_uses_the_redis_url_and_becomes_dramatiqs_broker(
    fresh_broker_setup: None, redis_client: redis.Redis
) -> None:
    broker = get_broker()
    assert isinstance(broker, RedisBroker)
    assert get_broker() is broker
    assert dramatiq.get_broker() is broker
    broker.client.set("probe:get_broker", "here")
    assert redis_client.get("probe:get_broker") == b"here"  # the REDIS_URL database
    broker.close()


def test_broker_url_wins_over_the_redis_url(
    fresh_broker_setup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_URL", "redis://broker.invalid:6390/3")  # never connected to
    reset_settings()
    broker = get_broker()
    assert isinstance(broker, RedisBroker)
    kwargs = broker.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("broker.invalid", 6390, 3)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/14", "rediss://127.0.0.1:6380/0", "unix:///tmp/r.sock"]
)
def test_redis_urls_make_a_redis_broker(url: str) -> None:
    broker = make_broker(url)
    assert isinstance(broker, RedisBroker)
    broker.close()


def test_amqp_urls_make_a_rabbitmq_broker_or_say_what_is_missing() -> None:
    if importlib.util.find_spec("pika") is None:
        with pytest.raises(ConfigError, match=r"^broker URL: amqp:// needs pika"):
            make_broker("amqp://guest:guest@127.0.0.1:5672/")
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        assert isinstance(make_broker("amqp://guest:guest@127.0.0.1:5672/"), RabbitmqBroker)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^broker URL: unsupported scheme 'kafka'"):
        make_broker("kafka://127.0.0.1:9092")
