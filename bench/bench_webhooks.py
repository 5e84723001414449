"""Webhook latency: from the commit of an outbox row in a worker to the POST arriving at a
receiver, with prompt delivery (the `PromptDelivery` middleware) against the baseline of the
scheduler's sweep alone (a delivery run every 10 s, `METER_WEBHOOK_PROMPT=0`).

The row is written by a real path: a `finalize_due_invoices` message finalizes one draft whose
grace is over, which writes `invoice.finalized` in the finalizing transaction. Latency is the
receiver's arrival time minus the row's `created_at` (the finalization's `now`, taken just
before its commit, on this machine's clock). One Dramatiq worker process (2 threads) on the
billing and notifications queues; the receiver is an http.server thread in this process.

    .venv/bin/python -m bench.bench_webhooks [--samples 100] [--baseline-samples 12]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import (
    dramatiq_workers,
    latency_summary,
    machine_line,
    use_bench_servers,
    wait_for_consumers,
)

SECRET = "whsec_bench_0123456789"
SWEEP_SECONDS = 10.0  # the scheduler's deliver_notifications interval (scheduler/jobs.py)


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.arrived = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        at = time.time()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.arrived:
            self.server.arrivals.append((at, body))
            self.server.arrived.notify_all()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def customers(count: int) -> list[str]:
    """`count` customers on a plan with a base fee, billed from a period long over."""
    from pricing.plans import load_plan
    from services.customers import create_customer
    from storage.catalog.plans import apply_plan

    apply_plan(
        load_plan(
            "code: hooks\nname: Hooks\ncurrency: USD\nbase_fee: '10.00'\n"
            "metrics: {api_calls: {aggregation: sum}}\n"
            "charges: [{metric: api_calls, model: standard, unit_amount: '0.01'}]\n"
        )
    )
    ids = [f"cus_hook_{i:04d}" for i in range(count)]
    for customer_id in ids:
        create_customer(customer_id, "hooks", starts_at=_period_start())
    return ids


def _period_start() -> datetime:
    """The first day of the month before last (its grace ended weeks ago)."""
    now = datetime.now(UTC)
    months = now.year * 12 + now.month - 1 - 2
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def measure(
    hook: Receiver, ids: list[str], *, sweep: bool, gap: tuple[float, float]
) -> list[float]:
    """Finalize one draft per customer of `ids`, one after the other; the latency of each."""
    from services.invoice_lifecycle import generate
    from tasks import billing, notify

    stop = threading.Event()

    def scheduler() -> None:  # what `meter scheduler` does for deliveries
        while not stop.wait(SWEEP_SECONDS):
            notify.deliver_notifications.send()

    sweeper = threading.Thread(target=scheduler, daemon=True)
    if sweep:
        sweeper.start()
    latencies = []
    try:
        for customer_id in ids:
            generate(customer_id, _period_start())
            seen = len(hook.arrivals)
            billing.finalize_due_invoices.send()
            with hook.arrived:
                arrived = hook.arrived.wait_for(
                    lambda seen=seen: len(hook.arrivals) > seen,  # type: ignore[misc]
                    timeout=60,
                )
                if not arrived:
                    raise RuntimeError(f"no webhook for {customer_id} within 60 s")
                at, body = hook.arrivals[-1]
            assert body["payload"]["customer_id"] == customer_id, body
            created = datetime.fromisoformat(body["created_at"]).timestamp()
            latencies.append(at - created)
            time.sleep(random.uniform(*gap))
    finally:
        stop.set()
    return latencies


def run(
    label: str, hook: Receiver, ids: list[str], *, prompt: bool, idle_poll_ms: int, log_dir: Path
) -> list[float]:
    from storage.redis_client import get_redis

    os.environ["METER_WEBHOOK_PROMPT"] = "1" if prompt else "0"
    # What `meter worker` sets from METER_WORKER_IDLE_POLL_MS (the benchmark runs dramatiq).
    os.environ["dramatiq_worker_timeout"] = str(idle_poll_ms)  # noqa: SIM112 (its name)
    with dramatiq_workers(
        "workers.app",
        processes=1,
        threads=2,
        queues=["billing", "notifications"],
        log_file=log_dir / f"{label}.log",
    ):
        wait_for_consumers(get_redis(), 1)
        gap = (0.0, 0.05) if prompt else (0.0, SWEEP_SECONDS)
        return measure(hook, ids, sweep=not prompt, gap=gap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--baseline-samples", type=int, default=12)
    parser.add_argument(
        "--idle-poll-ms",
        type=int,
        default=100,
        help="METER_WORKER_IDLE_POLL_MS of the workers (Dramatiq's own default is 1000)",
    )
    args = parser.parse_args()

    servers = use_bench_servers()
    log_dir = Path(tempfile.mkdtemp(prefix="meterline-bench-webhooks-"))
    try:
        from storage.migrate import migrate
        from tasks import runtime

        migrate(servers.database_url)
        runtime.start()  # this process sends on the bench broker
        ids = customers(args.samples + args.baseline_samples)
        print(machine_line())
        print(f"worker logs: {log_dir}")
        with receiver() as hook:
            os.environ.update(METER_WEBHOOK_URL=hook.url, METER_WEBHOOK_SECRET=SECRET)
            poll = args.idle_poll_ms
            prompt = run(
                "prompt", hook, ids[: args.samples], prompt=True, idle_poll_ms=poll, log_dir=log_dir
            )
            base = run(
                "sweep", hook, ids[args.samples :], prompt=False, idle_poll_ms=poll, log_dir=log_dir
            )
        report(f"prompt delivery (PromptDelivery middleware, idle poll {poll} ms)", prompt)
        report(f"baseline: the scheduler's sweep every {SWEEP_SECONDS:.0f} s", base)
        ratio = latency_summary(base)["p50"] / latency_summary(prompt)["p50"]
        print(f"p50 ratio baseline / prompt: {ratio:.0f}x")
    finally:
        servers.release()


def report(label: str, samples: list[float]) -> None:
    figures = latency_summary(samples)
    print(
        f"{label}: n={len(samples)}, commit -> receiver p50 {figures['p50']:.1f} ms,"
        f" p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms,"
        f" mean {figures['mean']:.1f} ms"
    )


if __name__ == "__main__":
    main()
