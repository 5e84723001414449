"""`meter worker`'s Prometheus endpoint: a real run of two worker processes ingests usage, and
one scrape shows Dramatiq's metrics and the engine's own, summed over the processes."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tasks import UsageRecorder
from tasks.broker import make_broker
from tests.faults.processes import ROOT, free_port, stop_worker, wait_for
from tests.faults.processes import scalar as _scalar
from tests.faults.processes import worker_env as _worker_env
from tests.metering.helpers import in_previous_period, setup_customer
from tests.webhook_receiver import receiver


@contextmanager
def meter_worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("meter")), "worker", "-p", "2", "-t", "1"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        stop_worker(process)


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint, `name{label="value",...}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_a_scrape_shows_the_engines_counts_summed_over_worker_processes(
    clean_state: None, tmp_path: Path
) -> None:
    setup_customer()
    port = free_port()
    env = {**_worker_env(), "METER_METRICS_PORT": str(port), "METER_DATA_DIR": str(tmp_path)}
    hook = receiver()
    hooks = hook.__enter__()
    hooks.statuses.extend([500] * 50)  # every delivery in this test fails
    env.update(METER_WEBHOOK_URL=hooks.url, METER_WEBHOOK_SECRET="whsec_metrics_test")
    recorder = UsageRecorder(make_broker(), batch_size=25, flush_interval=0.05)
    for i in range(150):
        recorder.record("cus_1", "api_calls", event_id=f"e{i}")
    for _ in range(5):
        recorder.record("cus_nobody", "api_calls")
    assert recorder.flush(timeout=30)
    for i in range(10):
        recorder.record("cus_1", "api_calls", event_id=f"e{i}")  # sent again: duplicates
    assert recorder.flush(timeout=30)
    recorder.close()
    batches = recorder.stats.sent_batches

    try:
        with meter_worker(env):
            wait_for(lambda: answers(port), timeout=60)
            applied = "SELECT count(*) FROM ingest_batches WHERE counters_applied_at IS NOT NULL"
            wait_for(lambda: _scalar(applied) == batches, timeout=60)
            wait_for(lambda: scrape(port).get("meterline_ingest_batches_total{}") == batches)
            period = f"{in_previous_period():%Y-%m}"
            closed = subprocess.run(
                [str(Path(sys.executable).with_name("meter")), "periods", "close", "--period",
                 period], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert closed.returncode == 0, closed.stderr  # one invoice job: cus_1's
            wait_for(lambda: scrape(port).get("meterline_invoices_generated_total{}") == 1)
            assert hooks.wait_for(1, answered=False)
            failed = lambda: sum(1 for *_r, status in hooks.requests if status == 500)  # noqa: E731
            wait_for(lambda: scrape(port).get("meterline_webhook_failures_total{}") == failed())
            samples = scrape(port)
            run_dirs = list((tmp_path / "metrics").iterdir())
    finally:
        hook.__exit__(None, None, None)

    assert samples["meterline_events_accepted_total{}"] == 150
    assert samples["meterline_events_duplicate_total{}"] == 10
    assert samples['meterline_events_rejected_total{reason="unknown_customer"}'] == 5
    assert samples["meterline_ingest_batch_seconds_count{}"] == batches
    assert samples['meterline_queue_lag_seconds_count{queue="ingest"}'] >= batches
    fired = _scalar("SELECT count(*) FROM alerts")
    assert fired > 0 and samples["meterline_alerts_fired_total{}"] == fired
    assert samples["meterline_invoices_generated_total{}"] == 1
    assert samples["meterline_webhook_failures_total{}"] >= 1
    assert samples["meterline_webhook_deliveries_total{}"] == 0
    ingest = 'actor_name="ingest_events",queue_name="ingest"'
    assert samples[f"dramatiq_messages_total{{{ingest}}}"] == batches  # Dramatiq's own
    # Multiprocess mode: each worker process keeps its own files, summed at every scrape.
    [run] = run_dirs
    assert len({f.name.rsplit("_", 1)[-1] for f in run.glob("counter_*.db")}) >= 2
    assert oct(run.stat().st_mode & 0o777) == "0o700"
