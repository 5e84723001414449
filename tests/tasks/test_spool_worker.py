"""A producer SIGKILLed with 50,000 events recorded through the spool: a real worker and
`meter spool drain` count every one exactly once, including those sent again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storage.ledger import batches
from tasks.spool import SUFFIX
from tests.faults.processes import ROOT, wait_for, worker
from tests.faults.processes import scalar as _scalar
from tests.faults.processes import worker_env as _worker_env
from tests.metering.helpers import assert_consistent, setup_customer

EVENTS = 50_000
SENT_BEFORE_KILL = 30_000


def test_a_killed_producer_loses_nothing_and_counts_nothing_twice(
    clean_state: None, tmp_path: Path
) -> None:
    setup_customer()
    spool = tmp_path / "spool"
    env = {**_worker_env(), "METER_SPOOL_DIR": str(spool)}
    producer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from tasks.producer import configure_recorder, flush_usage, record_usage
            configure_recorder(flush_interval=3600)  # only flush_usage sends
            for i in range({EVENTS}):
                record_usage("cus_1", "api_calls")
                if i + 1 == {SENT_BEFORE_KILL}:
                    assert flush_usage(timeout=60)  # sent, and trimmed from the spool
            print("recorded", flush=True)
            time.sleep(600)
        """),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert producer.stdout is not None
    try:
        assert producer.stdout.readline().strip() == "recorded"
        [own] = spool.glob(f"*{SUFFIX}")
        # The same unsent events in a second file: as if sent once already (a claimer killed
        # after its enqueue, before its trim). They must not count twice.
        shutil.copyfile(own, spool / f"copy-1-x{SUFFIX}")
    finally:
        producer.send_signal(signal.SIGKILL)
        producer.wait()

    drained = subprocess.run(
        [str(Path(sys.executable).parent / "meter"), "spool", "drain", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drained.returncode == 0, drained.stderr
    report = json.loads(drained.stdout)
    unsent = EVENTS - SENT_BEFORE_KILL
    assert (len(report["files"]), report["events"], report["busy"]) == (2, 2 * unsent, 0)
    assert list(spool.glob(f"*{SUFFIX}")) == []

    with worker("workers.app"):
        wait_for(lambda: _scalar("SELECT count(*) FROM usage_events") == EVENTS, timeout=120)
        applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NULL"
        wait_for(lambda: _scalar("SELECT count(*) FROM ingest_batches") == 4 and
                 _scalar(applied) == 0, timeout=120)  # fmt: skip
    assert batches.stats() == {"accepted": EVENTS, "duplicates": unsent, "rejected": {}}
    assert assert_consistent(require_live=True)["api_calls"] == EVENTS
    assert os.path.isdir(spool)
