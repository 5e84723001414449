"""A producer process stopped with SIGTERM (systemd, Docker, Kubernetes) sends every event it
had buffered, then stops the way it would have without the recorder: real processes, signals and
Redis (the session's own database), every event counted in the broker's queue."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.tasks.test_recorder_process import queued_events

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = 50_000

# A Redis broker that sends nothing until all 50,000 events are recorded, then takes 20 ms
# per message (100 batches of 500: 2 s): the buffer is full when the test sends SIGTERM.
SLOW_PRODUCER = """
import os, signal, sys, threading, time
from dramatiq.brokers.redis import RedisBroker
from tasks.producer import configure_recorder, record_usage

recorded = threading.Event()

def on_enqueue():
    pass

class SlowBroker(RedisBroker):
    def enqueue(self, message, *, delay=None):
        recorded.wait()
        time.sleep(0.02)
        on_enqueue()
        return super().enqueue(message, delay=delay)

recorder = configure_recorder(broker=SlowBroker(url=sys.argv[1]))
"""
RECORD_AND_WAIT = """
for i in range(int(sys.argv[2])):
    record_usage("cus_term", "api_calls", event_id=f"e{i}")
buffered = recorder.stats.buffered
recorded.set()  # before the test hears "buffered" and sends SIGTERM
print("buffered", buffered, flush=True)
time.sleep(120)  # until the test's SIGTERM
"""


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_producer_left_running() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start(code: str, redis_url: str, events: int = EVENTS, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), redis_url, str(events), *args],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _started.append(process)
    return process


def buffered_when_ready(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("buffered "), line + (process.stderr.read() if process.stderr else "")
    return int(line.split()[1])


def stop(process: subprocess.Popen[str], *signals: int) -> tuple[int, str, str]:
    for sig in signals:
        process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def assert_all_queued(client: redis.Redis, events: int = EVENTS) -> None:
    ids = [e["event_id"] for e in queued_events(client)]
    assert len(ids) == events and set(ids) == {f"e{i}" for i in range(events)}


def test_sigterm_sends_a_full_buffer_then_terminates_as_by_default(
    redis_client: redis.Redis, redis_url: str
) -> None:
    process = start(SLOW_PRODUCER + RECORD_AND_WAIT, redis_url)
    assert buffered_when_ready(process) == EVENTS  # not one sent yet
    code, _, err = stop(process, signal.SIGTERM)
    assert code == -signal.SIGTERM, err  # the exit status SIGTERM gives without the recorder
    assert_all_queued(redis_client)


HOST_HANDLER = """
calls = 0
def host_handler(signum, frame):  # the application's own, installed before the first record
    global calls
    calls += 1
    print("host handler", calls, "buffered", recorder.stats.buffered, flush=True)
    if calls == 2:
        sys.exit(3)
signal.signal(signal.SIGTERM, host_handler)

from tasks import shutdown
def on_enqueue():  # a second SIGTERM, sent while the first one's flush is running
    global on_enqueue
    if shutdown._flushing:
        on_enqueue = lambda: None
        os.kill(os.getpid(), signal.SIGTERM)
"""


def test_the_host_applications_handler_still_runs_after_the_flush(
    redis_client: redis.Redis, redis_url: str
) -> None:
    process = start(SLOW_PRODUCER + HOST_HANDLER + RECORD_AND_WAIT, redis_url)
    assert buffered_when_ready(process) == EVENTS
    # The second SIGTERM (sent by the producer itself, while the flush runs) is passed on after
    # that flush, not handled inside it.
    code, out, err = stop(process, signal.SIGTERM)
    assert code == 3, err
    assert out.splitlines() == ["host handler 1 buffered 0", "host handler 2 buffered 0"]
    assert_all_queued(redis_client)


def test_an_ignored_sigterm_stays_ignored_but_still_flushes(
    redis_client: redis.Redis, redis_url: str
) -> None:
    code = """
    import signal, sys, time
    from dramatiq.brokers.redis import RedisBroker
    from tasks.producer import configure_recorder, record_usage
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Nothing is sent but by a flush: the batch is never full, the interval never ends.
    recorder = configure_recorder(broker=RedisBroker(url=sys.argv[1]), batch_size=10_000,
                                  flush_interval=3600)
    for i in range(int(sys.argv[2])):
        record_usage("cus_term", "api_calls", event_id=f"e{i}")
    print("buffered", recorder.stats.buffered, flush=True)
    deadline = time.monotonic() + 30
    while recorder.stats.buffered and time.monotonic() < deadline:
        time.sleep(0.01)
    print("still running, buffered", recorder.stats.buffered, flush=True)
    """
    process = start(code, redis_url, events=1000)
    assert buffered_when_ready(process) == 1000
    code_, out, err = stop(process, signal.SIGTERM)
    assert code_ == 0, err
    assert out.strip() == "still running, buffered 0"
    assert_all_queued(redis_client, 1000)


def test_a_recorder_started_outside_the_main_thread_installs_no_handler(redis_url: str) -> None:
    code = """
    import signal, sys, threading
    from dramatiq.brokers.redis import RedisBroker
    from tasks.producer import configure_recorder
    from tasks.shutdown import install_sigterm_handler
    recorder = configure_recorder(broker=RedisBroker(url=sys.argv[1]))
    thread = threading.Thread(target=recorder.record, args=("cus_t", "api_calls"))
    thread.start(); thread.join()
    print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    print(install_sigterm_handler(), signal.getsignal(signal.SIGTERM).__name__)
    print(recorder.flush(10))
    """
    process = start(code, redis_url, events=0)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.split() == ["True", "True", "_on_sigterm", "True"]


# The signal lands while the main thread holds a lock that the sender thread needs: a trace
# function raises it on the first line that runs with the lock held.
LOCK_HELD_PRODUCER = """
import signal, sys
from dramatiq.brokers.redis import RedisBroker
from tasks.producer import configure_recorder, record_usage
recorder = configure_recorder(broker=RedisBroker(url=sys.argv[1]), batch_size=10_000,
                              flush_interval=3600)
for i in range(int(sys.argv[2])):
    record_usage("cus_term", "api_calls", event_id=f"e{i}")

def space_held():
    if recorder._space.acquire(blocking=False):
        recorder._space.release()
        return False
    return True

TARGET, HELD = sys.argv[3], {"stats": space_held, "flush": recorder._lock.locked}[sys.argv[3]]

def trace(frame, event, arg):
    if frame.f_code.co_name != TARGET or not frame.f_code.co_filename.endswith("recorder.py"):
        return None
    def line(frame, event, arg):
        if event == "line" and HELD():
            sys.settrace(None)
            print("signal with the lock held", flush=True)
            signal.raise_signal(signal.SIGTERM)  # its handler runs here, inside the section
        return line
    return line

sys.settrace(trace)
recorder.stats if TARGET == "stats" else recorder.flush()
print("not reached: the deferred SIGTERM ends the process as the section ends", flush=True)
"""


@pytest.mark.parametrize("target", ["stats", "flush"])
def test_a_sigterm_that_lands_while_the_main_thread_holds_a_recorder_lock(
    redis_client: redis.Redis, redis_url: str, target: str
) -> None:
    process = start(LOCK_HELD_PRODUCER, redis_url, 1000, target)
    out, err = process.communicate(timeout=60)  # a deadlock would never end
    assert process.returncode == -signal.SIGTERM, err
    assert out.splitlines() == ["signal with the lock held"]
    assert "still unsent" not in err  # the flush was not stuck behind the lock until its timeout
    assert_all_queued(redis_client, 1000)


def test_sigterm_in_a_process_that_never_recorded_keeps_the_default(redis_url: str) -> None:
    code = """
    import os, signal, sys, time
    import tasks.recorder
    print("buffered 0", flush=True)
    time.sleep(120)
    """
    process = start(code, redis_url, events=0)
    assert buffered_when_ready(process) == 0
    code_, _, _ = stop(process, signal.SIGTERM)
    assert code_ == -signal.SIGTERM
