"""The workers' Prometheus endpoint: Dramatiq's Prometheus middleware plus the engine's own
metrics (`tasks.metrics`), exposed together at ``http://METER_METRICS_HOST:METER_METRICS_PORT/``.

Dramatiq runs several worker processes (and a fork process that serves the endpoint), so the
metrics use prometheus_client's multiprocess mode: each process writes its values to files in
one directory, which the endpoint sums at every scrape. That directory must be empty when a
run starts and shared by all of its processes: `meter worker` creates one per run,
``METER_DATA_DIR/metrics/run-<pid>`` (owner only), removes those of runs that are over, and
sets PROMETHEUS_MULTIPROC_DIR (and Dramatiq's ``dramatiq_prom_*`` variables) before the worker
processes start — prometheus_client reads it when it is first imported.

Off when METER_METRICS_PORT is 0. `dramatiq workers.app` started by hand has metrics only if
PROMETHEUS_MULTIPROC_DIR is set (with ``dramatiq_prom_db`` the same directory).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from storage.settings import Settings
from tasks import metrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class QueueLag(Middleware):
    """Observes how long each message waited in its queue: from its enqueue, or from when a
    retry became due, to the start of its processing."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        due_ms = message.options.get("eta") or message.message_timestamp
        metrics.queue_lag(message.queue_name, (time.time() * 1000 - due_ms) / 1000)


def install_metrics(broker: dramatiq.Broker) -> bool:
    """In a worker process: add the middleware and turn the engine's metrics on, if this run
    has a metrics directory. Returns whether metrics are on."""
    if not os.environ.get(MULTIPROC_ENV):
        return False
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
    broker.add_middleware(QueueLag())
    metrics.enable()
    return True


def prepare_run(settings: Settings) -> Path | None:
    """In `meter worker`, before the worker processes start: a fresh metrics directory for
    this run, and the environment that points every process at it. None when metrics are off."""
    if settings.METER_METRICS_PORT == 0:
        return None
    base = Path(settings.METER_DATA_DIR).resolve() / "metrics"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in base.glob("run-*"):
        pid = old.name.removeprefix("run-")
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    run = base / f"run-{os.getpid()}"  # meter worker execs dramatiq: the run keeps this pid
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(mode=0o700)
    # Dramatiq's names are lower case; prometheus_client reads both spellings of its own.
    os.environ.update(
        {
            MULTIPROC_ENV: str(run),
            "prometheus_multiproc_dir": str(run),
            "dramatiq_prom_db": str(run),
            "dramatiq_prom_host": settings.METER_METRICS_HOST,
            "dramatiq_prom_port": str(settings.METER_METRICS_PORT),
        }
    )
    return run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
