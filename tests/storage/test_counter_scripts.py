"""The counters' Lua scripts: read from the `.lua` files shipped beside `storage.usage`, and
registered once per Redis client, whatever the number of calls."""

from __future__ import annotations

import gc
import tomllib
import weakref
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from redis.commands.core import Script

from storage.usage import counters
from storage.usage import scripts as scripts_module
from storage.usage.scripts import NAMES, scripts_for
from tasks.ingest import ingest_events
from tests.conftest import SessionServers
from tests.metering.helpers import assert_consistent, batch, event, period_start, setup_customer

LUA = Path(scripts_module.__file__).parent / "lua"


def test_the_scripts_are_the_lua_files_beside_the_module() -> None:
    assert sorted(path.stem for path in LUA.glob("*.lua")) == sorted(NAMES)
    registered = scripts_for(redis_lib.Redis())  # registering sends nothing to a server
    for name in NAMES:
        text = (LUA / f"{name}.lua").read_text("utf-8")
        assert getattr(registered, name).script == text
        assert "redis.call(" in text


def test_the_lua_files_are_package_data_so_a_wheel_carries_them() -> None:
    pyproject = tomllib.loads((LUA.parents[2] / "pyproject.toml").read_text("utf-8"))
    package_data = pyproject["tool"]["setuptools"]["package-data"]["storage.usage"]
    assert "lua/*.lua" in package_data


def test_each_client_registers_the_scripts_once(
    clean_state: None, test_servers: SessionServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []

    class CountingScript(Script):
        def __init__(self, client: Any, source: str) -> None:
            made.append(source)
            super().__init__(client, source)

    monkeypatch.setattr(scripts_module, "Script", CountingScript)
    client = redis_lib.Redis.from_url(test_servers.redis_url)  # new: nothing registered yet
    monkeypatch.setattr(counters, "get_redis", lambda: client)
    setup_customer()
    ingest_events(batch([event(quantity="2")]))  # the fast path
    ingest_events(batch([event(quantity="3")]))
    # Past 10^15 micro-units the hash keeps JSON: the general path (stage, then fold).
    ingest_events(batch([event(quantity="999999999.5") for _ in range(3)]))
    counters.forget_segment("cus_1", period_start(), [])
    assert assert_consistent(require_live=False)["api_calls"] == Decimal("3000000003.5")
    assert len(made) == len(NAMES)  # four scripts, registered on the first call only
    assert scripts_for(client) is scripts_for(client)

    other = redis_lib.Redis.from_url(test_servers.redis_url)
    assert scripts_for(other) is not scripts_for(client)
    assert len(made) == 2 * len(NAMES)


def test_a_dropped_client_takes_its_registration_with_it() -> None:
    gc.collect()  # first let go of the clients earlier tests dropped
    client = redis_lib.Redis()
    scripts_for(client)
    held = len(scripts_module._registered)
    gone = weakref.ref(client)
    del client
    gc.collect()
    assert gone() is None  # the registry did not keep it alive ...
    assert len(scripts_module._registered) == held - 1  # ... and forgot it
