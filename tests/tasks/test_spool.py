"""The producer's spool (METER_SPOOL_DIR): every event in a file before record() returns, sent
and trimmed by the sender, left for a claimer when the process dies; claimers never ship one
file twice."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from tasks.broker import INGEST_QUEUE
from tasks.recorder import UsageRecorder
from tasks.spool import SUFFIX, encode_row
from tasks.spool_claim import claim_orphans

REPO_ROOT = Path(__file__).resolve().parents[2]
NEVER = 3600.0


def queued_events(broker: StubBroker) -> list[dict[str, Any]]:
    queue = broker.queues[INGEST_QUEUE]
    events: list[dict[str, Any]] = []
    while not queue.empty():
        events.extend(json.loads(queue.get_nowait())["args"][0]["events"])
    return events


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    broker.declare_queue(INGEST_QUEUE)
    return broker


@pytest.fixture
def recorders() -> Iterator[list[UsageRecorder]]:
    made: list[UsageRecorder] = []
    yield made
    for recorder in made:
        recorder.close(timeout=5)


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def test_each_event_is_in_the_spool_file_before_record_returns(
    tmp_path: Path, broker: StubBroker, recorders: list[UsageRecorder]
) -> None:
    directory = tmp_path / "spool"
    recorder = UsageRecorder(broker, flush_interval=NEVER, spool_dir=directory)
    recorders.append(recorder)
    ids = [recorder.record("cus_1", "api_calls", i) for i in range(5)]
    ids.append(recorder.record("cus_2", "storage", Decimal("1.5"), properties={"region": "eu"}))
    [path] = spool_files(directory)
    lines = path.read_bytes().splitlines()
    assert [line.split(b'"')[1].decode() for line in lines] == ids
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # queued usage: owner only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert queued_events(broker) == []  # nothing sent yet: only the file holds them

    assert recorder.flush(timeout=10)
    events = queued_events(broker)
    assert [e["event_id"] for e in events] == ids
    assert [e["quantity"] for e in events] == ["0", "1", "2", "3", "4", "1.5"]
    assert events[-1]["properties"] == {"region": "eu"}
    assert path.read_bytes().strip(b"\0") == b""  # trimmed: the sent bytes are a hole now
    assert recorder.pending("cus_1", "api_calls").count == 5  # check_limit still counts them

    assert recorder.close(timeout=10)
    assert spool_files(directory) == []  # a clean close removes the file


def test_a_killed_producers_spool_is_claimed_by_the_next_recorder(
    tmp_path: Path, broker: StubBroker, recorders: list[UsageRecorder]
) -> None:
    directory = tmp_path / "spool"
    producer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from dramatiq.brokers.stub import StubBroker
            from tasks.recorder import UsageRecorder
            recorder = UsageRecorder(StubBroker(), flush_interval={NEVER},
                                     spool_dir={str(directory)!r})
            for i in range(1000):
                recorder.record("cus_dead", "api_calls", 2, event_id=f"dead-{{i}}")
            print("recorded", flush=True)
            time.sleep(600)
        """),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert producer.stdout is not None
    assert producer.stdout.readline().strip() == "recorded"
    [orphan] = spool_files(directory)
    recorder = UsageRecorder(broker, flush_interval=0.05, spool_dir=directory)
    recorders.append(recorder)
    recorder.record("cus_live", "api_calls")
    time.sleep(0.3)
    assert recorder.stats.claimed == 0  # its owner is alive: its lock keeps claimers off
    assert orphan.exists()

    producer.send_signal(signal.SIGKILL)
    producer.wait()
    recorder._next_claim = 0.0  # look again now rather than in CLAIM_INTERVAL
    recorder.record("cus_live", "api_calls")
    wait_for(lambda: recorder.stats.claimed == 1000)
    assert recorder.flush(timeout=10)
    events = queued_events(broker)
    dead = [e["event_id"] for e in events if e["customer_id"] == "cus_dead"]
    assert dead == [f"dead-{i}" for i in range(1000)]  # every one, once, with its id
    assert {e["quantity"] for e in events if e["customer_id"] == "cus_dead"} == {"2"}
    assert not orphan.exists()
    assert recorder.pending("cus_dead", "api_calls").count == 0  # not this process's usage


def write_orphan(path: Path, ids: list[str]) -> None:
    with path.open("wb") as file:
        for event_id in ids:
            file.write(encode_row((event_id, "cus_1", "api_calls", 1, time.time_ns(), None)))


def test_concurrent_claimers_ship_every_file_once(tmp_path: Path) -> None:
    expected = []
    for n in range(40):
        ids = [f"f{n}-e{i}" for i in range(50)]
        write_orphan(tmp_path / f"host-{n}-x{SUFFIX}", ids)
        expected += ids
    sent: list[str] = []
    lock = threading.Lock()

    def send(rows: list[Any]) -> str:
        time.sleep(0.001)  # a broker round trip: lets the claimers interleave
        with lock:
            sent.extend(row[0] for row in rows)
        return "batch"

    claimers = [
        threading.Thread(target=claim_orphans, args=(tmp_path, send), kwargs={"batch_size": 20})
        for _ in range(4)
    ]
    for claimer in claimers:
        claimer.start()
    for claimer in claimers:
        claimer.join()
    assert sorted(sent) == sorted(expected)  # none twice, none missing
    assert spool_files(tmp_path) == []


def test_a_file_someone_holds_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / f"host-1-x{SUFFIX}"
    write_orphan(path, ["a", "b"])
    sent: list[Any] = []
    holder = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a live producer, or another claimer
        report = claim_orphans(tmp_path, lambda rows: sent.extend(rows) or "b", batch_size=10)
        assert (report.busy, report.events, sent) == (1, 0, [])
        assert path.exists()
    finally:
        os.close(holder)
    report = claim_orphans(tmp_path, lambda rows: sent.extend(rows) or "b", batch_size=10)
    assert (report.events, [row[0] for row in sent]) == (2, ["a", "b"])


def test_a_damaged_line_is_skipped_and_the_rest_shipped(tmp_path: Path) -> None:
    path = tmp_path / f"host-1-x{SUFFIX}"
    write_orphan(path, ["a"])
    with path.open("ab") as file:
        file.write(b'["half", "cus_1"\n{"not": "an event"}\n')
    write_orphan(tmp_path / f"host-2-x{SUFFIX}", ["b"])
    sent: list[Any] = []
    report = claim_orphans(tmp_path, lambda rows: sent.extend(rows) or "b", batch_size=10)
    assert [row[0] for row in sent] == ["a", "b"]
    assert report.events == 2 and spool_files(tmp_path) == []


def test_a_forked_child_spools_to_a_file_of_its_own(
    tmp_path: Path, broker: StubBroker, recorders: list[UsageRecorder]
) -> None:
    recorder = UsageRecorder(broker, flush_interval=NEVER, spool_dir=tmp_path)
    recorders.append(recorder)
    recorder.record("cus_parent", "api_calls")
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            recorder.record("cus_child", "api_calls")
            code = 0 if len(spool_files(tmp_path)) == 2 else 2
        finally:
            os._exit(code)  # like a kill: its file stays
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent_file = recorder._spool.path if recorder._spool else None
    [child_file] = [p for p in spool_files(tmp_path) if p != parent_file]
    assert b"cus_child" in child_file.read_bytes()
    assert b"cus_parent" not in child_file.read_bytes()
    assert parent_file is not None and b"cus_child" not in parent_file.read_bytes()
