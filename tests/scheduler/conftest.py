"""Fixtures for the scheduler tests: leader elections on the session's database, each test on
a lock key of its own, every contender released afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from storage.leader_lock import LeaderElection, lock_key
from tests.conftest import SessionServers


@pytest.fixture
def election_key(request: pytest.FixtureRequest) -> int:
    return lock_key(f"test:{request.node.nodeid}")


@pytest.fixture
def contender(
    test_servers: SessionServers, election_key: int
) -> Iterator[Callable[[], LeaderElection]]:
    """Makes contenders for this test's lock; releases them all at the end."""
    made: list[LeaderElection] = []

    def make() -> LeaderElection:
        election = LeaderElection(test_servers.database_url, key=election_key)
        made.append(election)
        return election

    yield make
    for election in made:
        election.release()


def terminate_backend(url: str, pid: int | None) -> None:
    """Kill a server session from the outside, as a crash or a network cut would."""
    assert pid is not None
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row is not None and row[0] is True


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start
