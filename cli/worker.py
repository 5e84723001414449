"""`meter worker`: the Dramatiq worker processes (what the Procfile's `worker:` line runs)."""

from __future__ import annotations

import os
import sys

import typer

from cli.output import CliError

#: `meter worker`'s defaults (bench/bench_ingest.py runs with them unless told otherwise).
DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 4


def worker(
    processes: int = typer.Option(DEFAULT_PROCESSES, "--processes", "-p", help="Worker processes."),
    threads: int = typer.Option(DEFAULT_THREADS, "--threads", "-t", help="Threads per process."),
    queues: list[str] = typer.Option([], "--queue", "-Q", help="Only these queues."),
) -> None:
    """Run the workers: ingest batches, generate invoices, deliver notifications."""
    if processes < 1:
        raise CliError(f"--processes: must be at least 1, got {processes}")
    if threads < 1:
        raise CliError(f"--threads: must be at least 1, got {threads}")
    from storage.embedded import broker_url, database_url, redis_url

    # Start (or find) the embedded servers once here, so the worker processes share them.
    os.environ.setdefault("DATABASE_URL", database_url())
    os.environ.setdefault("REDIS_URL", redis_url())
    os.environ.setdefault("BROKER_URL", broker_url())
    _warn_if_the_broker_forgets(os.environ["BROKER_URL"])
    _check_database()
    from storage.settings import get_settings

    # Read by dramatiq.worker at import in the processes exec'd below.
    os.environ["dramatiq_worker_timeout"] = str(get_settings().METER_WORKER_IDLE_POLL_MS)  # noqa: SIM112
    from workers.metrics import prepare_run

    prepare_run(get_settings())  # the run's Prometheus directory and endpoint (port 0: none)
    args = [sys.executable, "-m", "dramatiq", "workers.app"]
    args += ["--processes", str(processes), "--threads", str(threads)]
    if queues:
        args += ["--queues", *queues]
    os.execv(sys.executable, args)  # noqa: S606 (re-exec this interpreter, fixed arguments)


def _check_database() -> None:
    """Refuse to start workers on a database they cannot use (unreachable, schema behind):
    opening the pool migrates it (METER_AUTO_MIGRATE) or raises SchemaNotMigrated."""
    from storage import db

    db.pool()
    db.close_pool()  # the worker processes open their own


def _warn_if_the_broker_forgets(url: str) -> None:
    """On stderr, before the workers start: a Redis broker without AOF loses queued batches."""
    from tasks.broker import make_broker
    from tasks.queues import broker_warnings

    broker = make_broker(url)
    try:
        for warning in broker_warnings(broker):
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    finally:
        broker.close()
