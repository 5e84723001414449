"""A RabbitMQ virtual host of the test session's own on the machine's RabbitMQ
(`amqp://guest:guest@127.0.0.1:5672/`, or METER_TEST_RABBITMQ_URL), so that test runs of
several engineers and CI never share a queue; deleted afterwards (with every queue in it).

Virtual hosts are made with `rabbitmqctl` (the machine's RabbitMQ, run as root, as CI is)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

_SERVER = os.environ.get("METER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _rabbitmqctl(*args: str) -> None:
    command = shutil.which("rabbitmqctl")
    assert command is not None, "rabbitmqctl not found: the RabbitMQ tests need the server's CLI"
    subprocess.run([command, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """An AMQP URL on a fresh virtual host, usable by the user of METER_TEST_RABBITMQ_URL."""
    vhost = f"meterline-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    user = urlsplit(_SERVER).username or "guest"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(urlsplit(_SERVER)._replace(path="/" + quote(vhost, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", vhost)
