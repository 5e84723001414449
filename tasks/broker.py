"""The Dramatiq broker every Meterline process shares, and the names of its queues.

Producers (web apps through `UsageRecorder`), workers and the scheduler must agree on the broker
and on the queue and actor names, so they are defined once (`tasks.names`). The URL comes from the
settings: `BROKER_URL` when set (RabbitMQ or a Redis distinct from the counters' one), else the
Redis URL, else an embedded Redis started from its wheel, so a fresh checkout runs with no
configuration.

Importing an actor module connects to nothing: Dramatiq binds an actor to the global broker
when its decorator runs, so until a process installs its broker (`install`, called by
`tasks.runtime.start` in workers, the scheduler and the CLI) the actors wait on an in-memory
placeholder, and `install` moves every one of them onto the real broker.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import dramatiq.broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from pricing.errors import ConfigError
from storage.embedded import broker_url
from tasks import names
from tasks.durable_retries import install_durable_retries
from tasks.encoding import MessageEncoder
from tasks.prompt_delivery import PromptDelivery

# The names live in `tasks.names`; these aliases are kept for code that imports them here.
INGEST_QUEUE = names.INGEST_QUEUE
INGEST_ACTOR = names.INGEST_EVENTS
BILLING_QUEUE = names.BILLING_QUEUE

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_AMQP_SCHEMES = ("amqp://", "amqps://")

_lock = threading.RLock()
_broker: dramatiq.Broker | None = None

# Where actors declared at import wait for `install` (in memory: holds no connection).
_PLACEHOLDER = StubBroker()
if dramatiq.broker.global_broker is None:
    dramatiq.set_broker(_PLACEHOLDER)


def make_broker(url: str | None = None) -> dramatiq.Broker:
    """A new broker for `url` (default: the configured one), chosen by the URL's scheme.

    Also installs `MessageEncoder` (Dramatiq's encoder is process-wide): one unreadable value
    in a batch then costs one rejected event, not the whole message. Every broker gets the
    `PromptDelivery` middleware (a message that wrote outbox rows sends a delivery run),
    unless METER_WEBHOOK_PROMPT is off, and `DurableRetries` in place of Dramatiq's `Retries`
    (a failed message is acknowledged only once its retry is in the broker)."""
    from storage.settings import get_settings

    dramatiq.set_encoder(MessageEncoder())
    broker = _make(url or broker_url())
    install_durable_retries(broker)  # a retry is never lost to a broker outage
    if get_settings().METER_WEBHOOK_PROMPT:
        broker.add_middleware(PromptDelivery())
    return broker


def _make(url: str) -> dramatiq.Broker:
    if url.startswith(_REDIS_SCHEMES):
        from storage.settings import get_settings

        settings = get_settings()
        return RedisBroker(
            url=url,
            heartbeat_timeout=settings.METER_BROKER_HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=settings.METER_BROKER_MAINTENANCE_CHANCE,
        )
    if url.startswith(_AMQP_SCHEMES):
        try:  # pika is only installed where RabbitMQ is used
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError as exc:
            raise ConfigError(
                "broker URL: amqp:// needs pika (pip install 'dramatiq[rabbitmq]')"
            ) from exc
        return RabbitmqBroker(url=url)
    scheme = url.split(":", 1)[0]
    raise ConfigError(f"broker URL: unsupported scheme {scheme!r} (expected redis or amqp)")


def install(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make `broker` the process's broker and Dramatiq's global one, and move every actor
    declared so far (on the placeholder or on a previously installed broker) onto it."""
    global _broker
    with _lock:
        previous = (_PLACEHOLDER, dramatiq.broker.global_broker, _broker)
        dramatiq.set_broker(broker)
        _broker = broker
        for source in {id(b): b for b in previous if b is not None and b is not broker}.values():
            for actor in list(source.actors.values()):
                actor.broker = broker
                broker.declare_actor(actor)
        return broker


def get_broker() -> dramatiq.Broker:
    """The installed broker; the first call in a process that installed none installs the
    configured one. That lazy path is the producer's entry: a web app that only records usage
    never calls `tasks.runtime.start`, and its first send resolves the broker from the
    settings (see `storage.embedded.broker_url`)."""
    with _lock:
        if _broker is None:
            return install(make_broker())
        return _broker


def broker_of(actor: dramatiq.Actor[..., Any]) -> dramatiq.Broker:
    """The broker `actor` sends to. An actor still on the placeholder (a CLI process that
    installed none: `meter periods close`, `meter ops retry`) gets the configured one, as the
    producer's first send does; an actor a test moved to a broker of its own keeps it."""
    if actor.broker is _PLACEHOLDER:
        get_broker()  # installs the configured broker and moves the actors onto it
    return actor.broker
