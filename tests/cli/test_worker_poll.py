"""`meter worker` hands METER_WORKER_IDLE_POLL_MS to the Dramatiq processes it execs (as
Dramatiq's worker timeout), so an idle worker notices a delivery run within it."""

from __future__ import annotations

import os

import pytest

import cli.worker
from storage.settings import reset_settings
from tests.conftest import SessionServers


class Execd(Exception):
    pass


@pytest.mark.parametrize(("setting", "expected"), [(None, "100"), ("250", "250")])
def test_the_idle_poll_reaches_the_worker_processes(
    test_servers: SessionServers,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    expected: str,
) -> None:
    monkeypatch.delenv("dramatiq_worker_timeout", raising=False)
    if setting is None:
        monkeypatch.delenv("METER_WORKER_IDLE_POLL_MS", raising=False)
    else:
        monkeypatch.setenv("METER_WORKER_IDLE_POLL_MS", setting)
    reset_settings()
    monkeypatch.setattr(cli.worker, "_check_database", lambda: None)
    monkeypatch.setattr(cli.worker, "_warn_if_the_broker_forgets", lambda url: None)
    seen: dict[str, str | None] = {}

    def execv(path: str, args: list[str]) -> None:
        seen["timeout"] = os.environ.get("dramatiq_worker_timeout")  # noqa: SIM112
        raise Execd

    monkeypatch.setattr(os, "execv", execv)
    try:
        with pytest.raises(Execd):
            cli.worker.worker(processes=1, threads=1, queues=[])
    finally:
        monkeypatch.undo()
        reset_settings()
    assert seen == {"timeout": expected}
