"""Two real scheduler processes on one lock: the leader SIGKILLed (PostgreSQL ends its session,
the standby leads at its next poll) and the leader frozen with SIGSTOP (its session and lock
stay alive: the lease bounds it, and the thawed ex-leader fires nothing)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import SessionServers
from tests.faults.processes import ROOT
from tests.faults.scheduler_child import POLL

LEASE = 2.0
SLACK = 3.0  # a loaded 2-core machine: process start-up, scheduling delays


class Child:
    """One scheduler process; its stdout lines (`enqueued tick <pid>`) with their arrival time."""

    def __init__(self, url: str, key: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.scheduler_child", url, str(key), str(LEASE)],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log: list[str] = []
        for stream, sink in ((self.process.stdout, self._put), (self.process.stderr, self._log)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream: object, sink: Callable[[str], None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink(line)

    def _put(self, line: str) -> None:
        self.lines.put((time.monotonic(), line.strip()))

    def _log(self, line: str) -> None:
        self.log.append(line)

    def next_tick(self, timeout: float) -> float:
        """When this process next enqueued something; fails after `timeout`."""
        try:
            at, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no enqueue within {timeout}s:\n{''.join(self.log)}") from None
        assert line.startswith("enqueued tick")
        return at

    def ticks(self) -> list[float]:
        """Everything enqueued since the last call."""
        found = []
        while True:
            try:
                found.append(self.lines.get_nowait()[0])
            except queue.Empty:
                return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_child(test_servers: SessionServers, election_key: int) -> Iterator[Callable[[], Child]]:
    children: list[Child] = []

    def start() -> Child:
        children.append(Child(test_servers.database_url, election_key))
        return children[-1]

    yield start
    for child in children:
        child.stop()


def _leader_and_standby(start_child: Callable[[], Child]) -> tuple[Child, Child]:
    leader = start_child()
    leader.next_tick(timeout=30)
    standby = start_child()
    time.sleep(1.5)  # the standby is up and polling (a cold start takes most of this)
    assert standby.ticks() == []
    leader.ticks()
    return leader, standby


def test_a_killed_leader_is_replaced_by_the_standby(start_child: Callable[[], Child]) -> None:
    leader, standby = _leader_and_standby(start_child)
    killed_at = time.monotonic()
    leader.process.send_signal(signal.SIGKILL)  # no clean-up: PostgreSQL ends the session
    leader.process.wait(timeout=10)
    took = standby.next_tick(timeout=10) - killed_at
    # The standby's next poll, the first tick, and the server's own hand-over.
    assert took < 2 * POLL + SLACK


def test_a_frozen_leader_is_replaced_within_its_lease_and_does_nothing_when_thawed(
    start_child: Callable[[], Child],
) -> None:
    leader, standby = _leader_and_standby(start_child)
    frozen_at = time.monotonic()
    leader.process.send_signal(signal.SIGSTOP)
    took = standby.next_tick(timeout=LEASE + 10) - frozen_at
    # The bound (README, storage.leader_lock): the lease, then the standby's next poll.
    assert LEASE - POLL < took < LEASE + 2 * POLL + SLACK
    leader.ticks()  # anything it printed before it froze

    leader.process.send_signal(signal.SIGCONT)
    time.sleep(LEASE + 1.0)  # its jobs' missed runs come due at once; its polls go on
    assert leader.process.poll() is None  # alive, back on standby
    assert leader.ticks() == []  # the thawed ex-leader enqueued nothing
    assert "lease over" in "".join(leader.log) or "lost the leader" in "".join(leader.log)
    assert len(standby.ticks()) >= 3  # the new leader keeps leading
