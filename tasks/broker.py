"""The Dramatiq broker every Meterline process shares, and the names of its queues.

Producers (web apps through `UsageRecorder`), workers and the scheduler must agree on the broker
and on the queue and actor names, so they are defined once, here. The URL comes from the
settings: `BROKER_URL` when set (RabbitMQ or a Redis distinct from the counters' one), else the
Redis URL, else an embedded Redis started from its wheel, so a fresh checkout runs with no
configuration.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from storage.embedded import broker_url
from tasks.encoding import MessageEncoder

INGEST_QUEUE = "ingest"
INGEST_ACTOR = "ingest_events"
BILLING_QUEUE = "billing"

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_AMQP_SCHEMES = ("amqp://", "amqps://")

_lock = threading.Lock()
_broker: dramatiq.Broker | None = None


def make_broker(url: str | None = None) -> dramatiq.Broker:
    """A new broker for `url` (default: the configured one), chosen by the URL's scheme.

    Also installs `MessageEncoder` (Dramatiq's encoder is process-wide): one unreadable value
    in a batch then costs one rejected event, not the whole message."""
    dramatiq.set_encoder(MessageEncoder())
    url = url or broker_url()
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
            raise RuntimeError(
                "broker URL: amqp:// needs pika (pip install 'dramatiq[rabbitmq]')"
            ) from exc
        return RabbitmqBroker(url=url)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"broker URL: unsupported scheme {scheme!r} (expected redis or amqp)")


def get_broker() -> dramatiq.Broker:
    """The process's broker: created on first call and installed as Dramatiq's global broker."""
    global _broker
    with _lock:
        if _broker is None:
            _broker = make_broker()
            dramatiq.set_broker(_broker)
        return _broker
