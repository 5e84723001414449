"""A server that cannot be reached, said in one line: which one, at which URL (never with its
password), and why. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from typing import Any

# SQLSTATE classes of a connection that could not be made or was lost: connection exception,
# invalid authorization, invalid catalog name (no such database), operator intervention.
_CONNECTION_STATES = ("08", "28", "3D", "57P")


def server_error(exc: BaseException) -> str | None:
    """The message for an unreachable PostgreSQL, Redis or broker; None for anything else."""
    message = _describe(exc)
    return None if message is None else _without_passwords(message)


def _describe(exc: BaseException) -> str | None:
    """Only modules already imported are looked at: an error cannot come from a client library
    this process never loaded (and `meter quote` never loads them).
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        if state is None or state.startswith(_CONNECTION_STATES):
            return f"database: cannot connect to {_database_url()} ({_reason(exc)})"
        return f"database: {_reason(exc)} ({_database_url()})"
    pool = sys.modules.get("psycopg_pool")
    if pool is not None and isinstance(exc, pool.PoolTimeout):
        return f"database: cannot connect to {_database_url()} (no connection in time: {exc})"
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"redis: cannot connect to {_redis_url()} ({_reason(exc)})"
    dramatiq_errors = sys.modules.get("dramatiq.errors")
    if dramatiq_errors is not None and isinstance(exc, _broker_connection_error(dramatiq_errors)):
        return f"broker: cannot connect to {_broker_url()} ({_reason(exc)})"
    return None


def _broker_connection_error(errors: Any) -> type[Exception]:
    """Dramatiq's connection error class: `BrokerConnectionError` where this release has the
    name, else the older `ConnectionError` (asking a newer release for that name warns)."""
    new: type[Exception] | None = getattr(errors, "BrokerConnectionError", None)
    return new if new is not None else errors.ConnectionError


def _without_passwords(message: str) -> str:
    """The message with any configured password blanked, should a client library quote it."""
    from urllib.parse import urlsplit

    from storage.settings import get_settings

    settings = get_settings()
    for url in (settings.DATABASE_URL, settings.REDIS_URL, settings.BROKER_URL):
        password = urlsplit(url).password if url and "://" in url else None
        if password and len(password) >= 4:  # a shorter one would mangle the words
            message = message.replace(password, "***")
    return message


def _reason(exc: BaseException) -> str:
    """The first line of the error, past libpq's `connection to server at ... failed:`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.rpartition(" failed: ")[2] or text
    return text.removeprefix("FATAL:").strip()


def _database_url() -> str:
    from storage.settings import display_url, get_settings

    settings = get_settings()
    if settings.DATABASE_URL:
        return display_url(settings.DATABASE_URL)
    return f"the embedded PostgreSQL in {settings.data_dir}"


def _redis_url() -> str:
    from storage.settings import display_url, get_settings

    settings = get_settings()
    if settings.REDIS_URL:
        return display_url(settings.REDIS_URL)
    return f"the embedded Redis in {settings.data_dir}"


def _broker_url() -> str:
    from storage.settings import display_url, get_settings

    settings = get_settings()
    url = settings.BROKER_URL or settings.REDIS_URL
    return display_url(url) if url else f"the embedded Redis in {settings.data_dir}"
