"""Events/s through the HTTP API against the Python producer, and the usage endpoint's latency.

Starts `meter web --workers W` (uvicorn) on the benchmark's own servers (`bench/common.py`),
then, in the same run:

1. **HTTP:** N events as `POST /v1/events` batches of B (1,000) from K client threads; each
   202 means the batch was screened (contract, customer, plan, window) and queued in the broker.
   Events/s from the first request to the last answer.
2. **Python producer (baseline):** the same N events with `record_usage` in this process, then
   `flush_usage()` (queued in the broker too). Events/s from the first call to the flush.
3. **Usage endpoint:** after ingesting a batch per customer in process, R sequential
   `GET /v1/customers/{id}/usage` (keep-alive): p50/p99; baseline `current_usage()` in process.

No worker runs: both paths stop at the broker, whose queue is flushed at the end.

    .venv/bin/python -m bench.bench_http [--events 100000] [--batch 1000] [--clients 4]
                                         [--web-workers 2] [--reads 2000] [--customers 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import bench.common
from bench.common import (
    REPO,
    latency_summary,
    machine_line,
    setup_api_customers,
    use_bench_servers,
)

_METER = "import sys; from cli.main import main; sys.argv = ['meter', *sys.argv[1:]]; main()"


def make_events(customers: list[str], count: int, tag: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"{tag}-{i}",
            "customer_id": customers[i % len(customers)],
            "metric": "api_calls",
            "quantity": "1",
            "timestamp": now,
        }
        for i in range(count)
    ]


def start_web(port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, METER_API_RATE_LIMIT="0", PYTHONPATH=str(REPO))
    command = [sys.executable, "-c", _METER, "web", "--port", str(port), "--workers", str(workers)]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True
        )


def wait_up(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"meter web did not answer at {base}")


def bench_http(
    base: str, key: str, events: list[dict[str, Any]], batch: int, clients: int
) -> float:
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as warm:
        warm.post("/v1/events", json={"events": batches[0][:10]}).raise_for_status()

    def send(chunk: list[dict[str, Any]]) -> int:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            answer = client.post("/v1/events", json={"events": chunk})
        if answer.status_code != 202 or answer.json()["accepted"] != len(chunk):
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")
        return len(chunk)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        sent = sum(pool.map(send, batches))
    elapsed = time.perf_counter() - started
    assert sent == len(events)
    return len(events) / elapsed


def bench_producer(events: list[dict[str, Any]]) -> float:
    from tasks import configure_recorder, flush_usage, record_usage

    configure_recorder()
    record_usage(events[0]["customer_id"], "api_calls", event_id="warm-up")
    flush_usage()
    started = time.perf_counter()
    for e in events:
        record_usage(e["customer_id"], e["metric"], 1, event_id=e["event_id"])
    flush_usage()
    return len(events) / (time.perf_counter() - started)


def bench_usage_reads(base: str, key: str, customers: list[str], reads: int) -> dict[str, Any]:
    from services.usage import current_usage
    from tasks.ingest import ingest_events

    for n, customer_id in enumerate(customers):  # counters to read: one batch per customer
        ingest_events.fn(
            {"batch_id": f"read-{n}", "events": make_events([customer_id], 50, f"r{n}")}
        )
    http: list[float] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        client.get(f"/v1/customers/{customers[0]}/usage").raise_for_status()
        for i in range(reads):
            start = time.perf_counter()
            client.get(f"/v1/customers/{customers[i % len(customers)]}/usage").raise_for_status()
            http.append(time.perf_counter() - start)
    local: list[float] = []
    for i in range(reads):
        start = time.perf_counter()
        current_usage(customers[i % len(customers)]).to_json()
        local.append(time.perf_counter() - start)
    return {"http": latency_summary(http), "in_process": latency_summary(local)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    print(machine_line())
    # A database of its own: other benchmarks (meterline_bench) may be running at the same time.
    bench.common.BENCH_DATABASE = "meterline_bench_http"
    servers = use_bench_servers()
    web: subprocess.Popen[bytes] | None = None
    try:
        from services import api_keys
        from storage.migrate import migrate
        from tasks.runtime import start

        migrate(servers.database_url)
        start()
        customers = setup_api_customers(args.customers)
        _, ingest_key = api_keys.create("ingest", "bench")
        _, ops_key = api_keys.create("ops", "bench")
        log = Path(f"/tmp/meterline-bench-http-{os.getpid()}.log")
        web = start_web(args.port, args.web_workers, log)
        base = f"http://127.0.0.1:{args.port}"
        wait_up(base)
        print(f"meter web --workers {args.web_workers} up (log {log})")

        http_rate = bench_http(
            base, ingest_key, make_events(customers, args.events, "h"), args.batch, args.clients
        )
        python_rate = bench_producer(make_events(customers, args.events, "p"))
        print(
            f"\nevents/s, {args.events:,} events, queued in the broker:\n"
            f"  HTTP  POST /v1/events (batches of {args.batch:,}, {args.clients} clients, "
            f"{args.web_workers} uvicorn workers): {http_rate:>10,.0f}\n"
            f"  Python record_usage + flush_usage (baseline):          {python_rate:>10,.0f}\n"
            f"  ratio HTTP / Python: {http_rate / python_rate:.2f}"
        )
        reads = bench_usage_reads(base, ops_key, customers, args.reads)
        h, p = reads["http"], reads["in_process"]
        print(
            f"\nusage reads, {args.reads:,} sequential, ms:\n"
            f"  GET /v1/customers/{{id}}/usage: p50 {h['p50']:.2f}  p99 {h['p99']:.2f}  "
            f"max {h['max']:.2f}\n"
            f"  current_usage() in process:  p50 {p['p50']:.2f}  p99 {p['p99']:.2f}  "
            f"max {p['max']:.2f}\n"
            f"  ratio p99 HTTP / in process: {h['p99'] / p['p99']:.1f}"
        )
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            try:
                web.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
        servers.release()


if __name__ == "__main__":
    main()
