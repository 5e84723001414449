"""The module `dramatiq` loads in every worker process: broker, middleware, actors.

`meter worker` runs `dramatiq workers.app`. Retries with backoff and time limits are set per
actor (see `tasks/`); errors go to Sentry when `SENTRY_DSN` is set.
"""

from __future__ import annotations

import logging

import dramatiq

from storage.settings import get_settings
from tasks import runtime
from tasks.encoding import WorkerEncoder

broker = runtime.start()  # the worker's start-up: this module is its entry point
# After the broker (which installs the producers' encoder): ingest messages decode with their
# events left as JSON text, which the ingest actor decodes into events in one call.
dramatiq.set_encoder(WorkerEncoder())

if get_settings().SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(dsn=get_settings().SENTRY_DSN, integrations=[DramatiqIntegration()])

logging.getLogger("meterline").setLevel(logging.INFO)

import tasks.billing  # noqa: E402
import tasks.ingest  # noqa: E402  (declares the actors on the broker above)
import tasks.maintenance  # noqa: E402
import tasks.notify  # noqa: E402
from tasks.retry_log import install_log_summaries  # noqa: E402
from workers.metrics import install_metrics  # noqa: E402

# Dramatiq logs a message with its arguments: an ingest batch is named, never printed.
install_log_summaries(tasks.ingest.ingest_events, tasks.ingest.ingest_failed)
# Prometheus: Dramatiq's middleware and the engine's metrics, when `meter worker` made this run
# a metrics directory (workers/metrics.py).
install_metrics(broker)
