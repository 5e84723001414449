"""`FlushOnShutdown`, the ASGI lifespan hook: every buffered event, including those the app
records in its own shutdown, is in the broker (the session's Redis) before the server hears
that the shutdown is complete — whether the app speaks the lifespan protocol or not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from tasks.producer import configure_recorder, record_usage
from tasks.recorder import UsageRecorder
from tasks.shutdown import FlushOnShutdown
from tests.tasks.test_recorder_process import queued_events


@pytest.fixture
def recorder(redis_client: redis.Redis, redis_url: str) -> Iterator[UsageRecorder]:
    """The default recorder, sending only when flushed (never a full batch, never the interval)."""
    broker = RedisBroker(url=redis_url)
    yield configure_recorder(broker=broker, flush_interval=3600)
    configure_recorder()
    broker.close()


def run_lifespan(app: Any, client: redis.Redis) -> dict[str, list[str]]:
    """Play the server's side of the lifespan protocol; what each message found queued."""
    seen: dict[str, list[str]] = {}

    async def main() -> None:
        incoming: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        answers: asyncio.Queue[str] = asyncio.Queue()

        async def send(message: Any) -> None:
            seen[message["type"]] = sorted(e["event_id"] for e in queued_events(client))
            await answers.put(message["type"])

        task = asyncio.create_task(app({"type": "lifespan"}, incoming.get, send))
        await incoming.put({"type": "lifespan.startup"})
        assert await answers.get() == "lifespan.startup.complete"
        record_usage("cus_asgi", "api_calls", event_id="during-serving")
        await incoming.put({"type": "lifespan.shutdown"})
        assert await answers.get() == "lifespan.shutdown.complete"
        await task

    asyncio.run(main())
    return seen


async def speaks_lifespan(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            record_usage("cus_asgi", "api_calls", event_id="in-app-shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def refuses_lifespan(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError(f"unsupported scope {scope['type']}")


def test_events_recorded_up_to_the_apps_own_shutdown_are_sent_before_it_completes(
    recorder: UsageRecorder, redis_client: redis.Redis
) -> None:
    seen = run_lifespan(FlushOnShutdown(speaks_lifespan), redis_client)
    assert seen["lifespan.startup.complete"] == []
    assert seen["lifespan.shutdown.complete"] == ["during-serving", "in-app-shutdown"]


def test_an_app_that_refuses_lifespan_gets_it_spoken_for_it(
    recorder: UsageRecorder, redis_client: redis.Redis
) -> None:
    seen = run_lifespan(FlushOnShutdown(refuses_lifespan), redis_client)
    assert seen["lifespan.shutdown.complete"] == ["during-serving"]


def test_other_scopes_pass_through_untouched(recorder: UsageRecorder) -> None:
    calls: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        return None

    asyncio.run(FlushOnShutdown(app)({"type": "http"}, receive, send))
    assert calls == [({"type": "http"}, receive, send)]
