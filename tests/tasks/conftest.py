"""Fixtures of the producer tests: the session's own Redis database, flushed around a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import SessionServers


@pytest.fixture
def redis_url(test_servers: SessionServers) -> str:
    """The session's Redis database (claimed for this test session alone by tests/conftest)."""
    return test_servers.redis_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
